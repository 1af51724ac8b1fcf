# The service_auto_start_provider example of the original's docs,
# getting-started/task-configuration.md, which still uses the old `applicationPool` name.
service_auto_start_provider {
  name = "MyPreloadProvider"
  type = "MyNamespace.ApplicationPreload, MyAssembly"
}

applicationPool {
  start_mode = "AlwaysRunning"
}

application {
  path                        = "local"
  service_auto_start_enabled  = true
  service_auto_start_provider = "MyPreloadProvider"
}
