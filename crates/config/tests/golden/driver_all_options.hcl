# Every driver option.
enabled                    = false
fingerprint_interval       = "1m"
directory_security         = false
allowed_target_websites    = ["*"]
allowed_apppool_identities = ["ApplicationPoolIdentity", "SpecificUser"]
allowed_apppool_users      = ["*"]
placeholder_app_path       = "/srv/nomad_iis/placeholder"

procdump {
  binary_path = "/usr/bin/gcore"
  accept_eula = true
}
