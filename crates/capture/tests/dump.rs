//! Dumps of a real running process (python3 with a second thread and an echo loop), parsed back: the
//! minidump with the `minidump` crate, the full dump as an ELF core with `goblin`.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use capture::{CaptureError, DumpKind, dump};
use goblin::elf::Elf;
use minidump::{Minidump, MinidumpModuleList, MinidumpThreadList, Module};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

/// Prints `ready` once its second thread runs, then echoes every line it reads.
const TARGET: &str = "import sys, threading, time
threading.Thread(target=time.sleep, args=(600,), daemon=True).start()
print('ready', flush=True)
for line in sys.stdin:
    print(line.strip(), flush=True)
";

/// A python3 process to dump; killed when dropped.
struct Target {
    child: Child,
    pid: u32,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Target {
    async fn start() -> Self {
        let mut child = tokio::process::Command::new("python3")
            .args(["-c", TARGET])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs");
        let pid = child.id().unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        assert_eq!(stdout.next_line().await.unwrap().as_deref(), Some("ready"));
        Self {
            child,
            pid,
            stdin,
            stdout,
        }
    }

    /// Proves the process still runs: it answers a line.
    async fn answers(&mut self, word: &str) {
        self.stdin
            .write_all(format!("{word}\n").as_bytes())
            .await
            .unwrap();
        let line = tokio::time::timeout(Duration::from_secs(10), self.stdout.next_line())
            .await
            .expect("the dumped process still answers");
        assert_eq!(line.unwrap().as_deref(), Some(word));
        assert!(self.child.try_wait().unwrap().is_none());
    }

    /// The process's thread ids.
    fn threads(&self) -> BTreeSet<u32> {
        std::fs::read_dir(format!("/proc/{}/task", self.pid))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().parse().unwrap())
            .collect()
    }

    /// The pid of whoever ptraces the process, 0 for nobody.
    fn tracer(&self) -> u32 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("TracerPid:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

/// Temporary folders a dump of `pid` would use.
fn leftovers(pid: u32) -> Vec<String> {
    let prefix = format!("nomad-iis-dump-{pid}-");
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(&prefix))
        .collect()
}

async fn read_all(file: capture::DumpFile) -> Vec<u8> {
    let len = file.len();
    let mut bytes = Vec::new();
    file.into_stream().read_to_end(&mut bytes).await.unwrap();
    assert_eq!(bytes.len() as u64, len, "len() is the streamed size");
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mini_dump_lists_the_threads_and_modules_and_the_process_runs_on() {
    let mut target = Target::start().await;
    let threads = target.threads();
    assert!(threads.len() >= 2);

    let file = dump(target.pid, DumpKind::Mini).await.unwrap();
    assert!(
        leftovers(target.pid).is_empty(),
        "the file is unlinked before it is streamed"
    );
    let bytes = read_all(file).await;

    let minidump = Minidump::read(bytes).unwrap();
    let listed: BTreeSet<u32> = minidump
        .get_stream::<MinidumpThreadList>()
        .unwrap()
        .threads
        .iter()
        .map(|t| t.raw.thread_id)
        .collect();
    assert_eq!(listed, threads);
    let modules = minidump.get_stream::<MinidumpModuleList>().unwrap();
    assert!(
        modules.iter().any(|m| m.code_file().contains("python")),
        "python's executable or library is among the modules"
    );
    assert!(modules.iter().any(|m| m.code_file().contains("libc")));

    target.answers("after-mini").await;
    assert_eq!(target.tracer(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_dump_is_an_elf_core_of_the_process_and_the_process_runs_on() {
    let mut target = Target::start().await;
    let threads = target.threads();

    let file = dump(target.pid, DumpKind::Full).await.unwrap();
    assert!(
        leftovers(target.pid).is_empty(),
        "the file is unlinked before it is streamed"
    );
    let bytes = read_all(file).await;

    let elf = Elf::parse(&bytes).unwrap();
    assert_eq!(elf.header.e_type, goblin::elf::header::ET_CORE);
    let mut prstatus_pids = BTreeSet::new();
    let mut mapped_files = Vec::new();
    for note in elf.iter_note_headers(&bytes).unwrap() {
        let note = note.unwrap();
        match note.n_type {
            // struct elf_prstatus on x86_64: pr_pid follows siginfo (12), cursig (2+2), sigpend and
            // sighold (8 each).
            goblin::elf::note::NT_PRSTATUS => {
                prstatus_pids.insert(u32::from_le_bytes(note.desc[32..36].try_into().unwrap()));
            }
            goblin::elf::note::NT_FILE => {
                mapped_files.push(String::from_utf8_lossy(note.desc).into_owned())
            }
            _ => {}
        }
    }
    assert_eq!(
        prstatus_pids, threads,
        "one NT_PRSTATUS per thread of the process"
    );
    assert!(
        mapped_files.iter().any(|f| f.contains("python")),
        "NT_FILE lists python"
    );

    target.answers("after-full").await;
    assert_eq!(target.tracer(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_full_dump_leaves_the_process_running_and_nothing_on_disk() {
    let mut target = Target::start().await;
    let pid = target.pid;
    let dumping = tokio::spawn(dump(pid, DumpKind::Full));
    // Wait until gdb is attached, then give up on the dump.
    tokio::time::timeout(Duration::from_secs(30), async {
        while target.tracer() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("gdb attaches to the process");
    dumping.abort();
    assert!(dumping.await.unwrap_err().is_cancelled());
    tokio::time::timeout(Duration::from_secs(10), async {
        while target.tracer() != 0 || !leftovers(pid).is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the debugger is gone and the dump folder removed");
    target.answers("after-cancel").await;
}

#[tokio::test]
async fn unknown_pid_is_not_found_for_both_kinds() {
    // Above any pid_max Linux allows (2^22).
    let pid = i32::MAX as u32;
    for kind in [DumpKind::Mini, DumpKind::Full] {
        let result = dump(pid, kind).await;
        assert!(
            matches!(result, Err(CaptureError::ProcessNotFound(p)) if p == pid),
            "{result:?}"
        );
    }
    assert!(leftovers(pid).is_empty());
}
