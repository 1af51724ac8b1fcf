# From the original's docs, features/https.md: a certificate file (interpolated path).
application {
  path = "..."
}

binding {
  type = "https"
  port = "httplabel"

  certificate {
    pfx_file = "${NOMAD_SECRETS_DIR}/mycertificate.pfx"
    password = "super#secret"
  }
}
