//! The Management API's flags, shared by plugin mode and `nomad_iis run`, and their checks.
//! Secrets are parsed straight into [`management::Secret`], so no `Debug` of the arguments can
//! print them.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Args;
use management::{Credentials, Limits, Secret, SecretSource, Settings, TlsFiles};

/// `--management-api-*`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Args)]
pub struct ManagementArgs {
    /// Port of the Management API (0 or absent = off).
    #[arg(long, value_name = "N")]
    pub management_api_port: Option<u16>,
    /// Address the Management API listens on (default: all interfaces with a key or secret,
    /// 127.0.0.1 without).
    #[arg(long, value_name = "IP")]
    pub management_api_address: Option<IpAddr>,
    /// API key the Management API requires in `X-Api-Key`.
    #[arg(long, value_name = "KEY", value_parser = secret)]
    pub management_api_key: Option<Secret>,
    /// A file whose first line is the API key.
    #[arg(long, value_name = "PATH")]
    pub management_api_key_file: Option<PathBuf>,
    /// An environment variable holding the API key.
    #[arg(long, value_name = "NAME")]
    pub management_api_key_env: Option<String>,
    /// Secret for the Management API's HS256 JWTs.
    #[arg(long, value_name = "SECRET", value_parser = secret)]
    pub management_api_jwt_secret: Option<Secret>,
    /// A file whose first line is the JWT secret.
    #[arg(long, value_name = "PATH")]
    pub management_api_jwt_secret_file: Option<PathBuf>,
    /// An environment variable holding the JWT secret.
    #[arg(long, value_name = "NAME")]
    pub management_api_jwt_secret_env: Option<String>,
    /// PEM certificate chain: serve the Management API over TLS.
    #[arg(long, value_name = "PATH", requires = "management_api_tls_key")]
    pub management_api_tls_cert: Option<PathBuf>,
    /// PEM private key of `--management-api-tls-cert`.
    #[arg(long, value_name = "PATH", requires = "management_api_tls_cert")]
    pub management_api_tls_key: Option<PathBuf>,
    /// Largest upload in bytes, with an optional K, M or G suffix (default 1G).
    #[arg(long, value_name = "SIZE", value_parser = size)]
    pub management_api_upload_limit: Option<u64>,
}

fn secret(value: &str) -> Result<Secret, String> {
    if value.is_empty() {
        return Err("empty".into());
    }
    Ok(Secret::new(value))
}

fn size(value: &str) -> Result<u64, String> {
    let (digits, unit) = match value.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => value.split_at(i),
        None => (value, ""),
    };
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("{value:?} is not a size like 500M"))?;
    let factor: u64 = match unit.to_ascii_uppercase().trim_end_matches(['B', 'I']) {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => return Err(format!("{value:?}: unknown unit {unit:?} (K, M or G)")),
    };
    number
        .checked_mul(factor)
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{value:?} is out of range"))
}

impl ManagementArgs {
    /// The settings, `None` when the API is off; an error names the flag.
    pub fn settings(&self) -> Result<Option<Settings>, String> {
        let Some(port) = self.management_api_port.filter(|p| *p != 0) else {
            return Ok(None);
        };
        let load = |what: &'static str,
                    value: &Option<Secret>,
                    file: &Option<PathBuf>,
                    env: &Option<String>| {
            SecretSource::pick(
                what,
                value.as_ref().map(|s| s.expose().to_owned()),
                file.clone(),
                env.clone(),
            )
            .and_then(|source| source.map(|s| s.load(what)).transpose())
            .map_err(|e| e.to_string())
        };
        let credentials = Credentials {
            api_key: load(
                "--management-api-key",
                &self.management_api_key,
                &self.management_api_key_file,
                &self.management_api_key_env,
            )?,
            jwt_secret: load(
                "--management-api-jwt-secret",
                &self.management_api_jwt_secret,
                &self.management_api_jwt_secret_file,
                &self.management_api_jwt_secret_env,
            )?,
        };
        let tls = match (&self.management_api_tls_cert, &self.management_api_tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        };
        let mut limits = Limits::default();
        if let Some(max) = self.management_api_upload_limit {
            limits.max_upload = max;
        }
        let settings = Settings {
            address: self.management_api_address,
            port,
            credentials,
            tls,
            limits,
        };
        // Refuse an open API on a network address now, not when it binds.
        management::server::listen_address(settings.address, port, &settings.credentials)
            .map_err(|e| e.to_string())?;
        Ok(Some(settings))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    #[command(no_binary_name = true)]
    struct Wrapper {
        #[command(flatten)]
        args: ManagementArgs,
    }

    fn parse(args: &[&str]) -> Result<Option<Settings>, String> {
        Wrapper::try_parse_from(args)
            .map_err(|e| e.to_string())?
            .args
            .settings()
    }

    #[test]
    fn off_without_a_port_and_secrets_from_files_or_env() {
        assert!(parse(&[]).unwrap().is_none());
        assert!(
            parse(&["--management-api-port=0", "--management-api-key=k"])
                .unwrap()
                .is_none()
        );
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("key");
        std::fs::write(&file, "from-file\n").unwrap();
        let settings = parse(&[
            "--management-api-port",
            "5004",
            &format!("--management-api-key-file={}", file.display()),
            "--management-api-upload-limit=10M",
        ])
        .unwrap()
        .unwrap();
        assert!(settings.credentials.api_key.unwrap().matches(b"from-file"));
        assert_eq!(settings.limits.max_upload, 10 << 20);
        assert!(
            !format!(
                "{:?}",
                Wrapper::try_parse_from(["--management-api-key=hunter2"]).unwrap()
            )
            .contains("hunter2")
        );
        let both = parse(&[
            "--management-api-port=1",
            "--management-api-key=a",
            "--management-api-key-env=HOME",
        ])
        .unwrap_err();
        assert!(both.contains("--management-api-key"), "{both}");
        let open = parse(&[
            "--management-api-port=1",
            "--management-api-address=0.0.0.0",
        ])
        .unwrap_err();
        assert!(open.contains("loopback"), "{open}");
        assert!(size("1G").unwrap() == 1 << 30 && size("x").is_err() && size("5T").is_err());
    }
}
