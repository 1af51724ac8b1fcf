# This project's extension: an application whose worker is named by a `process` block
# instead of a web.config, next to a static application in the same task.
application_pool {
  name = "api"
  start_mode = "AlwaysRunning"
}

application {
  alias = "api"
  path = "local/api"
  application_pool = "api"
  process {
    command = "python3"
    args = ["-m", "http.server", "%PORT%", "--bind", "127.0.0.1"]
    env = {
      PYTHONUNBUFFERED = "1"
      WORKERS = 4
    }
  }
}

application {
  path = "local/site"
}

application {
  alias = "tool"
  path = "local/tool"
  process {
    command = "./tool"
  }
}

binding {
  type = "http"
  port = "web"
}
