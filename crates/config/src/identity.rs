//! Which Unix account each pool's workers should run as, in IIS's spirit, before any lookup:
//! the driver turns a [`WorkerAccount`] into a uid and gid (it needs the node's user database
//! and its allocation of dynamic ids, which this pure crate does not touch).
//!
//! | job | account |
//! |---|---|
//! | Nomad's task `user` (when set) | that user, for every pool |
//! | `ApplicationPoolIdentity` (default) | a per-pool dynamic uid/gid without a passwd entry |
//! | `LocalService`, `NetworkService` | `nobody` |
//! | `LocalSystem` | `root` |
//! | `SpecificUser` + `username` | that user |
//!
//! The node's allow-lists are checked by [`TaskConfig::validate`]; this only maps.

use crate::error::ConfigError;
use crate::task::{Identity, TaskConfig};
use crate::validate::non_blank;

/// The account a pool's workers run as, before it is looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerAccount {
    /// A uid/gid allocated for this pool alone (IIS's per-pool virtual account).
    Dynamic,
    /// The unprivileged `nobody` account (IIS's built-in service accounts).
    Nobody,
    /// `root` (IIS's `LocalSystem`).
    Root,
    /// A named user from the pool's `username`.
    User(String),
    /// Nomad's task `user`, which wins over every pool's identity.
    TaskUser(String),
}

/// What one used pool asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolIdentity {
    /// Short pool name (matches `control::PoolSpec::name`).
    pub pool: String,
    /// The field an error about this account names: `application_pool[1].username`, `user`
    /// for Nomad's task user, `application_pool[0].identity` otherwise.
    pub field: String,
    /// The identity the job asked for.
    pub identity: Identity,
    /// The account to run as.
    pub account: WorkerAccount,
}

impl PoolIdentity {
    /// How the mapping reads in status, logs and task events, once the uid is known:
    /// `ApplicationPoolIdentity (uid 61234)`, `NetworkService as nobody (uid 65534)`,
    /// `SpecificUser www-data (uid 33)`, `task user app (uid 1000)`.
    pub fn describe(&self, uid: u32) -> String {
        let identity = self.identity.as_str();
        match &self.account {
            WorkerAccount::Dynamic => format!("{identity} (uid {uid})"),
            WorkerAccount::Nobody => format!("{identity} as nobody (uid {uid})"),
            WorkerAccount::Root => format!("{identity} as root (uid {uid})"),
            WorkerAccount::User(name) => format!("{identity} {name} (uid {uid})"),
            WorkerAccount::TaskUser(name) => format!("task user {name} (uid {uid})"),
        }
    }
}

impl TaskConfig {
    /// The account of every pool an application uses, in the order of the resolved spec's
    /// pools. `task_user` is Nomad's `TaskConfig.user` (empty when the job sets none).
    pub fn pool_identities(&self, task_user: &str) -> Result<Vec<PoolIdentity>, ConfigError> {
        let checked = self.structure()?;
        let task_user = task_user.trim();
        checked
            .pools
            .iter()
            .map(|used| {
                let pool = &used.config;
                let field = |name: &str| match &used.path {
                    Some(path) => format!("{path}.{name}"),
                    None => "application_pool".to_owned(),
                };
                let (field, account) = if !task_user.is_empty() {
                    (
                        "user".to_owned(),
                        WorkerAccount::TaskUser(task_user.to_owned()),
                    )
                } else {
                    match pool.identity {
                        Identity::ApplicationPoolIdentity => {
                            (field("identity"), WorkerAccount::Dynamic)
                        }
                        Identity::LocalService | Identity::NetworkService => {
                            (field("identity"), WorkerAccount::Nobody)
                        }
                        Identity::LocalSystem => (field("identity"), WorkerAccount::Root),
                        Identity::SpecificUser => {
                            let name = non_blank(&pool.username).ok_or_else(|| {
                                ConfigError::new(
                                    field("username"),
                                    "required when identity is SpecificUser",
                                )
                            })?;
                            (
                                field("username"),
                                WorkerAccount::User(name.trim().to_owned()),
                            )
                        }
                    }
                };
                Ok(PoolIdentity {
                    pool: pool.name.clone(),
                    field,
                    identity: pool.identity,
                    account,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{ApplicationConfig, PoolConfig};

    fn task() -> TaskConfig {
        let mut network = PoolConfig::named("net");
        network.identity = Identity::NetworkService;
        let mut local = PoolConfig::named("svc");
        local.identity = Identity::LocalService;
        let mut system = PoolConfig::named("sys");
        system.identity = Identity::LocalSystem;
        let mut user = PoolConfig::named("usr");
        user.identity = Identity::SpecificUser;
        user.username = Some(" www-data ".into());
        let mut unused = PoolConfig::named("unused");
        unused.identity = Identity::LocalSystem;
        let pools = vec![network, local, system, user, unused];
        let applications = ["net", "svc", "sys", "usr", "default"]
            .iter()
            .map(|pool| ApplicationConfig {
                alias: (*pool).to_owned(),
                application_pool: (*pool).to_owned(),
                ..ApplicationConfig::at("local")
            })
            .collect();
        TaskConfig {
            application_pools: pools,
            applications,
            ..TaskConfig::default()
        }
    }

    #[test]
    fn identities_map_in_iis_spirit() {
        let mapped: Vec<(String, String, WorkerAccount)> = task()
            .pool_identities("")
            .expect("valid")
            .into_iter()
            .map(|p| (p.pool, p.field, p.account))
            .collect();
        assert_eq!(
            mapped,
            vec![
                (
                    "default".into(),
                    "application_pool".into(),
                    WorkerAccount::Dynamic
                ),
                (
                    "net".into(),
                    "application_pool[0].identity".into(),
                    WorkerAccount::Nobody
                ),
                (
                    "svc".into(),
                    "application_pool[1].identity".into(),
                    WorkerAccount::Nobody
                ),
                (
                    "sys".into(),
                    "application_pool[2].identity".into(),
                    WorkerAccount::Root
                ),
                (
                    "usr".into(),
                    "application_pool[3].username".into(),
                    WorkerAccount::User("www-data".into())
                ),
            ]
        );
    }

    #[test]
    fn nomads_task_user_wins_for_every_pool() {
        let mapped = task().pool_identities(" app ").expect("valid");
        assert_eq!(mapped.len(), 5);
        for pool in &mapped {
            assert_eq!(pool.account, WorkerAccount::TaskUser("app".into()));
            assert_eq!(pool.field, "user");
        }
        assert_eq!(mapped[3].describe(1000), "task user app (uid 1000)");
    }

    #[test]
    fn descriptions_say_what_was_asked_and_what_runs() {
        let mapped = task().pool_identities("").expect("valid");
        let described: Vec<String> = mapped
            .iter()
            .zip([61234, 65534, 65534, 0, 33])
            .map(|(p, uid)| p.describe(uid))
            .collect();
        assert_eq!(
            described,
            vec![
                "ApplicationPoolIdentity (uid 61234)",
                "NetworkService as nobody (uid 65534)",
                "LocalService as nobody (uid 65534)",
                "LocalSystem as root (uid 0)",
                "SpecificUser www-data (uid 33)",
            ]
        );
    }

    #[test]
    fn specific_user_without_a_name_is_an_error() {
        let mut config = task();
        config.application_pools[3].username = Some("  ".into());
        assert_eq!(
            config.pool_identities("").map_err(|e| e.to_string()),
            Err("application_pool[3].username: required when identity is SpecificUser".into())
        );
    }
}
