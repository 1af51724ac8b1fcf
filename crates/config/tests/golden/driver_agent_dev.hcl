# The config block of the original's examples/agent.dev.hcl.
enabled = true
fingerprint_interval = "10s"
allowed_target_websites = [ "Default Web Site" ]

procdump {
  binary_path = "C:\\procdump.exe"
  accept_eula = true
}
