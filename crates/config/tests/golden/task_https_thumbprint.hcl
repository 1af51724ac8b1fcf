# From the original's docs, features/https.md: a pre-installed certificate.
application {
  path = "..."
}

binding {
  type = "https"
  port = "httplabel"

  certificate {
    thumbprint = "005ce633b71c48f2345b533fd8e259f154e45ed6"
  }
}
