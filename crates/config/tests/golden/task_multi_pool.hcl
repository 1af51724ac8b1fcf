# From the original's docs, features/multi-application-pools.md.
application_pool {
  #name = "default" # Can be omitted, because it's the default
  managed_runtime_version = "None"
  start_mode = "AlwaysRunning"
  identity = "ApplicationPoolIdentity"
}
application_pool {
  name = "appA"
  start_mode = "AlwaysRunning"
  identity = "NetworkService"
}
application_pool {
  name = "appB"
  start_mode = "AlwaysRunning"
  identity = "SpecificUser"
  username = "CONTOSO\\WebAppUser"
  password = "SecretPassword123"
}

application {
  path = "local/path-to-root-app"
  #application_pool = "default" # Can be omitted and it will use the default app pool
}
application {
  alias = "/app-a"
  path = "local/path-to-appA"
  application_pool = "appA" # References the application_pool name
}
application {
  alias = "/app-b"
  path = "local/path-to-appB"
  application_pool = "appB"
}

binding {
  type = "http"
  port = "httplabel"
}
