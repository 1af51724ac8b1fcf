# Every driver option.
enabled                    = false
fingerprint_interval       = "1m"
directory_security         = false
allowed_target_websites    = ["*"]
allowed_apppool_identities = ["ApplicationPoolIdentity", "SpecificUser"]
allowed_apppool_users      = ["*"]
placeholder_app_path       = "/srv/nomad_iis/placeholder"

procdump {
  binary_path = "/usr/bin/gcore"
  accept_eula = true
}

limits {
  h2_max_concurrent_streams    = 64
  response_buffer_budget       = 33554432
  max_connections_per_listener = 4096
  header_read_timeout          = "20s"
  h2_keepalive_interval        = "1m"
  max_header_size              = 32768
}
