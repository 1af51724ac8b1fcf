# A Python web application run as a worker process behind the site host, the way IIS runs it
# with HttpPlatformHandler: app/web.config names the program (`python3 app.py`) and passes the
# port in %HTTP_PLATFORM_PORT%. The pool starts the worker on the first request (OnDemand),
# stops it after 5 idle minutes and recycles it without dropping requests.
#
# Under Nomad: `nomad job run worker-app.nomad.hcl` (the application folder must then exist in
# the task folder, e.g. fetched by an `artifact` block, and python3 be installed).
# Without Nomad: `nomad_iis run examples/worker-app/worker-app.nomad.hcl`; relative paths then
# resolve against this file's folder.
job "worker-app" {
  datacenters = ["dc1"]
  type        = "service"

  group "web" {
    network {
      port "http" {}
    }

    task "app" {
      driver = "iis"

      config {
        application_pool {
          name             = "python"
          start_mode       = "OnDemand"
          idle_timeout     = "5m"
          start_time_limit = "30s"
        }

        application {
          path             = "app"
          application_pool = "python"
        }

        binding {
          type = "http"
          port = "http"
        }
      }

      env {
        GREETING = "Hello from a worker process"
      }

      resources {
        cpu    = 100
        memory = 128
      }
    }
  }
}
