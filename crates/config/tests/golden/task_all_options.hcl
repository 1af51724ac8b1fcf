# Every block and option of the task schema.
target_website = "Default Web Site"
permit_iusr    = false

service_auto_start_provider {
  name = "Warmup"
  type = "Shop.Warmup, Shop"
}

applicationPool {
  name = "legacy"
}

application_pool {
  name                         = "default"
  identity                     = "SpecificUser"
  username                     = "svc-web"
  password                     = "s3cret"
  managed_pipeline_mode        = "Integrated"
  managed_runtime_version      = "v4.0"
  start_mode                   = "AlwaysRunning"
  idle_timeout                 = "1h30m"
  periodic_restart             = "1.00:00:00"
  start_time_limit             = "00:01:30"
  shutdown_time_limit          = "45s"
  disable_overlapped_recycle   = true
  enable_32bit_app_on_win64    = false
  service_unavailable_response = "TcpLevel"
  queue_length                 = 2000

  extension {
    name  = "autoStart"
    value = "true"
  }
}

application_pool {
  name = "api"
}

application {
  path                        = "local/site"
  alias                       = "/"
  application_pool            = "default"
  enable_preload              = true
  service_auto_start_enabled  = true
  service_auto_start_provider = "Warmup"

  virtual_directory {
    alias = "/images"
    path  = "/srv/images"

    extension {
      name  = "logonMethod"
      value = "ClearText"
    }
  }

  virtual_directory {
    alias = "docs"
    path  = "local/docs"
  }

  extension {
    name  = "preloadEnabled"
    value = "true"
  }
}

application {
  path             = "local/api"
  alias            = "/api/v1/"
  application_pool = "api"
}

binding {
  type = "http"
  port = "http"
}

binding {
  type        = "https"
  port        = "443"
  hostname    = "shop.example.com"
  require_sni = true
  ip_address  = "10.0.0.5"

  certificate {
    pfx_file = "secrets/shop.pfx"
    password = "pfx-pass"
  }
}

binding {
  type     = "https"
  port     = "https"
  hostname = "api.example.com"

  certificate {
    cert_file = "secrets/api.pem"
    key_file  = "secrets/api.key"
  }
}

binding {
  type       = "https"
  port       = "admin"
  ip_address = "*"

  certificate {
    thumbprint      = "005ce633b71c48f2345b533fd8e259f154e45ed6"
    use_self_signed = true
  }
}
