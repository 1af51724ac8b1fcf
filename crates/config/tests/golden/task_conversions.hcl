# Values of other types than the spec declares, converted by hcldec: numbers to strings,
# strings to numbers and bools.
application_pool {
  idle_timeout = 30
  queue_length = "1e3"
}

application {
  path           = "local"
  enable_preload = "true"
}

binding {
  type     = "http"
  port     = 8080
  hostname = "numbers.example.com"
}
