# From the original's docs, features/https.md: PEM files rendered from Vault.
application {
  path = "..."
}

binding {
  type = "https"
  port = "httplabel"

  certificate {
    cert_file = "${NOMAD_SECRETS_DIR}/certificate.pem"
    key_file = "${NOMAD_SECRETS_DIR}/certificate.pem"
  }
}
