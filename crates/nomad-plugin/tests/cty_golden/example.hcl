command = "x"
port {
  label = "http"
  to    = 8080
}
