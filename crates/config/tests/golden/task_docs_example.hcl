# The example in the original's docs, getting-started/task-configuration.md.
application_pool {
  identity = "ApplicationPoolIdentity"
}

application {
  path = "local"
}

binding {
  type = "http"
  port = "httplabel"
}
