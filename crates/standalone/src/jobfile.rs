//! Reading a Nomad job file (or a bare `config {}` body) into a plan of `iis` tasks.
//!
//! Only what a single machine can honour is planned: one allocation per group, the group's
//! `network { port "label" {} }` labels, the task's `env` and `config`. Features that need a
//! Nomad cluster (`artifact`, `template`) produce warnings that name them; `count > 1` is an
//! error. Interpolations are evaluated later, per task, when ports are known.

use std::collections::BTreeMap;
use std::path::Path;

use hcl::eval::{Context, Evaluate};
use hcl::{Block, Body};

/// What a job file asks for.
#[derive(Debug, Clone)]
pub struct JobPlan {
    /// The job's name (the file stem for a bare config file).
    pub job_name: String,
    /// Every task whose driver is `iis`.
    pub tasks: Vec<TaskPlan>,
    /// Things the job asks for that `nomad_iis run` does not do.
    pub warnings: Vec<String>,
}

/// One `iis` task to run.
#[derive(Debug, Clone)]
pub struct TaskPlan {
    /// Group name (`""` for a bare config file).
    pub group: String,
    /// Task name.
    pub name: String,
    /// Body of the task's `config {}` block.
    pub config: Body,
    /// The task's `env {}` attributes, not yet evaluated.
    pub env: Vec<hcl::Attribute>,
    /// Port labels of the group's network block, with their static numbers if any.
    pub ports: BTreeMap<String, Option<u16>>,
    /// A bare config file has no network block: every port label a binding names gets a port.
    pub bare: bool,
}

/// A job file that cannot be planned.
#[derive(Debug, thiserror::Error)]
pub enum JobFileError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid HCL.
    #[error("{path}: not valid HCL: {message}")]
    Parse {
        /// The file.
        path: String,
        /// Parser message.
        message: String,
    },
    /// The job asks for something this mode cannot do, or is malformed.
    #[error("{0}")]
    Unsupported(String),
}

/// Reads and plans the job file at `path`.
pub fn read(path: &Path) -> Result<JobPlan, JobFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| JobFileError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .map(|s| s.split('.').next().unwrap_or(s).to_owned())
        .unwrap_or_else(|| "task".to_owned());
    plan(&text, &stem).map_err(|e| match e {
        JobFileError::Parse { message, .. } => JobFileError::Parse {
            path: path.display().to_string(),
            message,
        },
        other => other,
    })
}

/// Plans job file text; `fallback_name` names the task of a bare config body.
pub fn plan(text: &str, fallback_name: &str) -> Result<JobPlan, JobFileError> {
    let body = hcl::parse(text).map_err(|e| JobFileError::Parse {
        path: String::new(),
        message: e.to_string(),
    })?;
    let jobs: Vec<&Block> = body.blocks().filter(|b| b.identifier() == "job").collect();
    match jobs.as_slice() {
        [] => Ok(JobPlan {
            job_name: fallback_name.to_owned(),
            tasks: vec![TaskPlan {
                group: String::new(),
                name: fallback_name.to_owned(),
                config: body,
                env: Vec::new(),
                ports: BTreeMap::new(),
                bare: true,
            }],
            warnings: Vec::new(),
        }),
        [job] => plan_job(job),
        _ => Err(JobFileError::Unsupported(
            "the file holds more than one job block; give one job per file".into(),
        )),
    }
}

fn label(block: &Block, what: &str) -> Result<String, JobFileError> {
    block
        .labels()
        .first()
        .map(|l| l.as_str().to_owned())
        .ok_or_else(|| JobFileError::Unsupported(format!("a {what} block needs a name label")))
}

fn literal_number(attr: &hcl::Attribute, what: &str) -> Result<i64, JobFileError> {
    attr.expr()
        .evaluate(&Context::new())
        .ok()
        .and_then(|v| v.as_i64())
        .ok_or_else(|| JobFileError::Unsupported(format!("{what} must be a literal number")))
}

fn plan_job(job: &Block) -> Result<JobPlan, JobFileError> {
    let job_name = label(job, "job")?;
    let mut tasks = Vec::new();
    let mut warnings = Vec::new();
    for group in job.body().blocks().filter(|b| b.identifier() == "group") {
        let group_name = label(group, "group")?;
        if let Some(count) = group.body().attributes().find(|a| a.key() == "count") {
            let n = literal_number(count, &format!("group \"{group_name}\": count"))?;
            if n > 1 {
                return Err(JobFileError::Unsupported(format!(
                    "group \"{group_name}\": count = {n} is not supported by `nomad_iis run` (it runs one allocation per group)"
                )));
            }
        }
        let ports = group_ports(group, &group_name)?;
        for task in group.body().blocks().filter(|b| b.identifier() == "task") {
            let task_name = label(task, "task")?;
            let at = format!("task \"{group_name}/{task_name}\"");
            let driver = task
                .body()
                .attributes()
                .find(|a| a.key() == "driver")
                .and_then(|a| a.expr().evaluate(&Context::new()).ok())
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            if driver != "iis" {
                warnings.push(format!("{at}: driver \"{driver}\" is not iis; skipped"));
                continue;
            }
            for unsupported in ["artifact", "template"] {
                if task.body().blocks().any(|b| b.identifier() == unsupported) {
                    warnings.push(format!(
                        "{at}: `{unsupported}` blocks are not carried out by `nomad_iis run`; the files they would create must already be in place"
                    ));
                }
            }
            let configs: Vec<&Block> = task
                .body()
                .blocks()
                .filter(|b| b.identifier() == "config")
                .collect();
            let config = match configs.as_slice() {
                [one] => one.body().clone(),
                [] => {
                    return Err(JobFileError::Unsupported(format!(
                        "{at}: has no config block"
                    )));
                }
                _ => {
                    return Err(JobFileError::Unsupported(format!(
                        "{at}: has more than one config block"
                    )));
                }
            };
            let env = task
                .body()
                .blocks()
                .filter(|b| b.identifier() == "env")
                .flat_map(|b| b.body().attributes().cloned().collect::<Vec<_>>())
                .collect();
            tasks.push(TaskPlan {
                group: group_name.clone(),
                name: task_name,
                config,
                env,
                ports: ports.clone(),
                bare: false,
            });
        }
    }
    if tasks.is_empty() {
        return Err(JobFileError::Unsupported(format!(
            "job \"{job_name}\" has no task with driver = \"iis\""
        )));
    }
    Ok(JobPlan {
        job_name,
        tasks,
        warnings,
    })
}

fn group_ports(
    group: &Block,
    group_name: &str,
) -> Result<BTreeMap<String, Option<u16>>, JobFileError> {
    let mut ports = BTreeMap::new();
    for network in group
        .body()
        .blocks()
        .filter(|b| b.identifier() == "network")
    {
        for port in network.body().blocks().filter(|b| b.identifier() == "port") {
            let name = label(port, "port")?;
            let fixed = match port.body().attributes().find(|a| a.key() == "static") {
                Some(attr) => {
                    let what = format!("group \"{group_name}\": port \"{name}\": static");
                    let n = literal_number(attr, &what)?;
                    Some(u16::try_from(n).map_err(|_| {
                        JobFileError::Unsupported(format!("{what} = {n} is not a port number"))
                    })?)
                }
                None => None,
            };
            ports.insert(name, fixed);
        }
    }
    Ok(ports)
}

/// The interpolation variables Nomad offers a task, for the values this machine has.
pub struct Interpolation<'a> {
    /// Allocation id.
    pub alloc_id: &'a str,
    /// Job name.
    pub job_name: &'a str,
    /// Group name.
    pub group: &'a str,
    /// Task name.
    pub task: &'a str,
    /// The allocation folder.
    pub alloc_dir: &'a Path,
    /// The task folder.
    pub task_dir: &'a Path,
    /// Resolved ports, label → number.
    pub ports: &'a BTreeMap<String, u16>,
}

impl Interpolation<'_> {
    /// The `NOMAD_*` variables as an evaluation context; anything else stays undefined, so its
    /// use is an error naming it.
    pub fn context(&self) -> Context<'static> {
        let mut ctx = Context::new();
        let dir = |p: &Path| p.display().to_string();
        let vars = [
            ("NOMAD_ALLOC_ID", self.alloc_id.to_owned()),
            (
                "NOMAD_SHORT_ALLOC_ID",
                self.alloc_id.chars().take(8).collect(),
            ),
            (
                "NOMAD_ALLOC_NAME",
                format!("{}.{}[0]", self.job_name, self.group),
            ),
            ("NOMAD_ALLOC_INDEX", "0".to_owned()),
            ("NOMAD_JOB_NAME", self.job_name.to_owned()),
            ("NOMAD_JOB_ID", self.job_name.to_owned()),
            ("NOMAD_GROUP_NAME", self.group.to_owned()),
            ("NOMAD_TASK_NAME", self.task.to_owned()),
            ("NOMAD_NAMESPACE", "default".to_owned()),
            ("NOMAD_REGION", "global".to_owned()),
            ("NOMAD_DC", "dc1".to_owned()),
            ("NOMAD_ALLOC_DIR", dir(&self.alloc_dir.join("alloc"))),
            ("NOMAD_TASK_DIR", dir(&self.task_dir.join("local"))),
            ("NOMAD_SECRETS_DIR", dir(&self.task_dir.join("secrets"))),
        ];
        for (name, value) in vars {
            ctx.declare_var(name, value);
        }
        for (label, port) in self.ports {
            let label = label.replace('-', "_");
            ctx.declare_var(format!("NOMAD_PORT_{label}"), port.to_string());
            ctx.declare_var(format!("NOMAD_HOST_PORT_{label}"), port.to_string());
            ctx.declare_var(format!("NOMAD_IP_{label}"), "127.0.0.1");
            ctx.declare_var(format!("NOMAD_HOST_IP_{label}"), "127.0.0.1");
            ctx.declare_var(format!("NOMAD_ADDR_{label}"), format!("127.0.0.1:{port}"));
            ctx.declare_var(
                format!("NOMAD_HOST_ADDR_{label}"),
                format!("127.0.0.1:{port}"),
            );
        }
        ctx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOB: &str = r#"
job "demo" {
  datacenters = ["dc1"]
  group "web" {
    count = 1
    network {
      port "http" {}
      port "admin" { static = 8181 }
    }
    task "site" {
      driver = "iis"
      artifact { source = "https://example.invalid/app.zip" }
      env { GREETING = "hi" }
      config {
        application { path = "site" }
        binding {
          type = "http"
          port = "http"
        }
      }
    }
    task "sidecar" {
      driver = "exec"
      config { command = "true" }
    }
  }
}
"#;

    #[test]
    fn plans_iis_tasks_with_ports_and_warnings() {
        let plan = plan(JOB, "x").unwrap();
        assert_eq!(plan.job_name, "demo");
        assert_eq!(plan.tasks.len(), 1);
        let task = &plan.tasks[0];
        assert_eq!((task.group.as_str(), task.name.as_str()), ("web", "site"));
        assert_eq!(task.ports.get("http"), Some(&None));
        assert_eq!(task.ports.get("admin"), Some(&Some(8181)));
        assert_eq!(task.env.len(), 1);
        assert!(
            plan.warnings.iter().any(|w| w.contains("artifact")),
            "{:?}",
            plan.warnings
        );
        assert!(
            plan.warnings.iter().any(|w| w.contains("sidecar")),
            "{:?}",
            plan.warnings
        );
    }

    #[test]
    fn count_above_one_is_an_error_naming_the_group() {
        let text = JOB.replace("count = 1", "count = 3");
        let err = plan(&text, "x").unwrap_err().to_string();
        assert!(err.contains("group \"web\": count = 3"), "{err}");
    }

    #[test]
    fn a_bare_config_body_is_one_task() {
        let plan = plan("application { path = \".\" }\n", "mysite").unwrap();
        assert_eq!(plan.tasks.len(), 1);
        assert!(plan.tasks[0].bare);
        assert_eq!(plan.tasks[0].name, "mysite");
    }

    #[test]
    fn a_job_without_iis_tasks_is_an_error() {
        let err = plan("job \"j\" {\n group \"g\" {\n task \"t\" {\n driver = \"exec\"\n config {}\n }\n }\n}\n", "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no task with driver = \"iis\""), "{err}");
    }
}
