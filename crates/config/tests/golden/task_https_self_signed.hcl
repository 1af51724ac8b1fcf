# From the original's docs, features/https.md: a self-signed certificate.
application {
  path = "..."
}

binding {
  type = "https"
  port = "httplabel"

  certificate {
    use_self_signed = true
  }
}
