# The example in the original's docs, getting-started/driver-configuration.md (its
# `enabled = true,` comma is HCL1 syntax, dropped here).
enabled = true
fingerprint_interval = "30s"
directory_security = true
allowed_target_websites = [ "Default Web Site" ]
allowed_apppool_identities = [ "ApplicationPoolIdentity", "NetworkService" ]
allowed_apppool_users = [ "IIS_IUSRS", "CONTOSO\\WebAppUser" ]

# Only available when using the nomad_iis binary with Management API
procdump {
  binary_path = "C:\\procdump.exe"
  accept_eula = true
}
