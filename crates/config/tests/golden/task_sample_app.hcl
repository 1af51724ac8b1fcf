# The config block of the original's examples/static_sample_app.hcl and
# examples/aspnet_sample_app.hcl (sevensolutions/nomad-iis, MIT).
application {
  path = "local"
}

binding {
  type = "http"
  port = "httplabel"
}
