# A static site with two applications and an http and an https binding.
#
# Under Nomad: `nomad job run static-site.nomad.hcl` (the application folders must then exist in
# the task folder, e.g. fetched by an `artifact` block).
# Without Nomad: `nomad_iis run examples/static-site/static-site.nomad.hcl`; relative paths then
# resolve against this file's folder.
job "static-site" {
  datacenters = ["dc1"]
  type        = "service"

  group "web" {
    network {
      port "http" {}
      port "https" {}
    }

    task "site" {
      driver = "iis"

      config {
        application {
          path = "site"
        }

        application {
          alias = "docs"
          path  = "docs"
        }

        binding {
          type = "http"
          port = "http"
        }

        binding {
          type = "https"
          port = "https"

          certificate {
            use_self_signed = true
          }
        }
      }

      resources {
        cpu    = 100
        memory = 64
      }
    }
  }
}
