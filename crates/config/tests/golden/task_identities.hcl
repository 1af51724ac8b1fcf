# The identities example of the original's docs, features/multi-application-pools.md, with
# one application per pool added (a config needs at least one application).
application_pool {
  name = "web"
  identity = "ApplicationPoolIdentity" # Default IIS AppPool identity
}
application_pool {
  name = "api"
  identity = "NetworkService" # Can access network resources
}
application_pool {
  name = "backend"
  identity = "SpecificUser"
  username = "DOMAIN\\ServiceAccount"
  password = "SecretPassword"
}
application_pool {
  name = "gmsa"
  identity = "SpecificUser"
  username = "DOMAIN\\GMSAAccount$" # Group Managed Service Account
  # password omitted for GMSA
}

application {
  path = "local/web"
  application_pool = "web"
}
application {
  alias = "api"
  path = "local/api"
  application_pool = "api"
}
application {
  alias = "backend"
  path = "local/backend"
  application_pool = "backend"
}
application {
  alias = "gmsa"
  path = "local/gmsa"
  application_pool = "gmsa"
}
