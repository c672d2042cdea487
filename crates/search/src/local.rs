//! Trials as child processes of the driver, on one machine. Each of the `workers` slots owns a
//! device — its own GPU (`wgpu:N`), or a share of the CPU's threads — so two trials never share
//! a GPU by accident. A slot's trial that runs past the time limit is killed and recorded as
//! `timeout`; one that exits without a result file (a crash, the out-of-memory killer) as
//! `failed`, with its exit status and the last line of its log. Children get SIGKILL when the
//! driver dies (Linux `PR_SET_PDEATHSIG`), so a killed search leaves no orphans behind that a
//! resumed one would race with.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Result, SearchError};
use crate::executor::{TrialExecutor, TrialJob, TrialProgram};
use crate::result::{TrialResult, TrialStatus};

/// Where one worker runs its trials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// The `--device` of its trials (`cpu`, `wgpu:0`, …).
    pub device: String,
    /// `--threads` of its trials.
    pub threads: usize,
}

impl Slot {
    /// `workers` slots on `devices`: one GPU per worker (it is an error to have more workers
    /// than GPUs), or on the CPU, its `cores` threads split evenly.
    pub fn plan(workers: usize, devices: &[String], cores: usize) -> std::result::Result<Vec<Slot>, String> {
        if workers == 0 {
            return Err("--workers must be at least 1".into());
        }
        let threads = (cores / workers).max(1);
        let gpus: Vec<&String> = devices.iter().filter(|d| d.as_str() != "cpu").collect();
        if gpus.is_empty() {
            return Ok(vec![Slot { device: "cpu".into(), threads }; workers]);
        }
        if workers > gpus.len() {
            return Err(format!(
                "--workers {workers} but {} GPU{} ({}): two trials would share a GPU; use --workers {} or name more devices",
                gpus.len(),
                if gpus.len() == 1 { "" } else { "s" },
                gpus.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                gpus.len()
            ));
        }
        Ok(gpus.iter().take(workers).map(|d| Slot { device: d.to_string(), threads }).collect())
    }
}

struct Running {
    job: TrialJob,
    slot: usize,
    child: Child,
    started: Instant,
}

/// N concurrent `plastic trial` processes.
pub struct LocalExecutor {
    program: TrialProgram,
    slots: Vec<Slot>,
    busy: Vec<bool>,
    time_limit: Option<Duration>,
    running: Vec<Running>,
}

impl LocalExecutor {
    pub fn new(program: TrialProgram, slots: Vec<Slot>, time_limit: Option<Duration>) -> Self {
        let busy = vec![false; slots.len()];
        Self { program, slots, busy, time_limit, running: Vec::new() }
    }

    fn spawn(&mut self, job: &TrialJob) -> Result<()> {
        let slot = self.busy.iter().position(|b| !b).ok_or_else(|| SearchError::Executor(format!("trial {}: every worker is busy", job.trial)))?;
        let s = &self.slots[slot];
        let log = OpenOptions::new().create(true).append(true).open(job.log()).map_err(|e| SearchError::io(&job.log(), e))?;
        let log2 = log.try_clone().map_err(|e| SearchError::io(&job.log(), e))?;
        let mut command = Command::new(&self.program.program);
        command.args(TrialProgram::args(&job.dir, &s.device, s.threads)).stdin(Stdio::null()).stdout(log).stderr(log2);
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe; it only marks this child to receive SIGKILL
            // when the parent thread exits.
            unsafe {
                command.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = command.spawn().map_err(|e| SearchError::Executor(format!("cannot start {}: {e}", self.program.program.display())))?;
        self.busy[slot] = true;
        self.running.push(Running { job: job.clone(), slot, child, started: Instant::now() });
        Ok(())
    }
}

/// The last non-empty line of a log, for a failed trial's error.
pub fn last_line(path: &Path) -> Option<String> {
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(4096))).ok()?;
    let mut tail = String::new();
    f.read_to_string(&mut tail).ok()?;
    // Progress bars redraw with carriage returns; the last segment is what was on screen.
    tail.lines().flat_map(|l| l.rsplit('\r').next()).map(str::trim).filter(|l| !l.is_empty()).last().map(String::from)
}

impl TrialExecutor for LocalExecutor {
    fn name(&self) -> &'static str {
        "local"
    }

    fn capacity(&self) -> usize {
        self.slots.len()
    }

    fn launch(&mut self, jobs: &[TrialJob]) -> Result<()> {
        jobs.iter().try_for_each(|j| self.spawn(j))
    }

    fn poll(&mut self) -> Result<Vec<TrialResult>> {
        let mut done = Vec::new();
        let mut i = 0;
        while i < self.running.len() {
            let r = &mut self.running[i];
            let wall = r.started.elapsed().as_secs_f64();
            let status = r.child.try_wait().map_err(|e| SearchError::Executor(format!("trial {}: {e}", r.job.trial)))?;
            let timed_out = status.is_none() && self.time_limit.is_some_and(|l| r.started.elapsed() > l);
            if status.is_none() && !timed_out {
                i += 1;
                continue;
            }
            let r = self.running.swap_remove(i);
            let mut child = r.child;
            let result = if timed_out {
                let _ = child.kill();
                let _ = child.wait();
                let limit = self.time_limit.expect("a limit").as_secs_f64();
                let r2 = TrialResult::stopped(r.job.trial, TrialStatus::Timeout, format!("killed after the trial time limit of {limit:.0} s"), Some(wall));
                r2.write(&r.job.result())?;
                r2
            } else {
                match r.job.read_result()? {
                    Some(result) => result,
                    None => {
                        let status = status.expect("exited");
                        let how = match (status.code(), std::os::unix::process::ExitStatusExt::signal(&status)) {
                            (Some(c), _) => format!("exited with status {c}"),
                            (None, Some(9)) => "was killed (signal 9; out of memory?)".to_string(),
                            (None, Some(s)) => format!("was killed by signal {s}"),
                            _ => "ended".to_string(),
                        };
                        let tail = last_line(&r.job.log()).map(|l| format!(": {l}")).unwrap_or_default();
                        let r2 = TrialResult::stopped(r.job.trial, TrialStatus::Failed, format!("the trial process {how} without a result{tail} (log: {})", r.job.log().display()), Some(wall));
                        r2.write(&r.job.result())?;
                        r2
                    }
                }
            };
            self.busy[r.slot] = false;
            done.push(result);
        }
        Ok(done)
    }

    fn running(&self) -> Vec<usize> {
        self.running.iter().map(|r| r.job.trial).collect()
    }

    fn cancel_all(&mut self) {
        for r in &mut self.running {
            let _ = r.child.kill();
            let _ = r.child.wait();
        }
        self.running.clear();
        self.busy.iter_mut().for_each(|b| *b = false);
    }

    fn save(&self) -> serde_json::Value {
        serde_json::Value::Null
    }

    fn restore(&mut self, _saved: &serde_json::Value, running: &[TrialJob]) -> Result<Vec<TrialJob>> {
        // Local trials died with their driver: run them again (they resume from their checkpoints).
        Ok(running.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_split_threads_or_take_one_gpu_each() {
        assert_eq!(Slot::plan(2, &[], 16).unwrap(), vec![Slot { device: "cpu".into(), threads: 8 }; 2]);
        assert_eq!(Slot::plan(4, &["cpu".into()], 2).unwrap()[3].threads, 1);
        let gpus: Vec<String> = vec!["wgpu:0".into(), "wgpu:1".into()];
        let s = Slot::plan(2, &gpus, 16).unwrap();
        assert_eq!((s[0].device.as_str(), s[1].device.as_str()), ("wgpu:0", "wgpu:1"));
        let e = Slot::plan(3, &gpus, 16).unwrap_err();
        assert!(e.contains("share a GPU"), "{e}");
    }

    fn job(dir: &Path, trial: usize) -> TrialJob {
        let d = dir.join(format!("trials/{trial:04}"));
        std::fs::create_dir_all(&d).unwrap();
        TrialJob { trial, dir: d }
    }

    /// A fake `plastic`: a shell script that acts on the trial directory's name.
    fn fake_program(dir: &Path) -> TrialProgram {
        let p = dir.join("fake-plastic");
        std::fs::write(
            &p,
            r#"#!/bin/sh
# args: trial --dir DIR --device D --threads N
dir="$3"
case "$dir" in
  */0000) printf '{"trial":0,"status":"ok","validation_accuracy":0.5,"test_accuracy":0.4,"params":10,"units":3,"wall_s":0.1,"error":null}' > "$dir/result.json" ;;
  */0001) echo "error: boom" >&2; exit 2 ;;
  */0002) sleep 30 ;;
esac
"#,
        )
        .unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        TrialProgram::new(p)
    }

    #[test]
    fn failing_and_timed_out_trials_are_recorded_and_free_their_slot() {
        let dir = std::env::temp_dir().join(format!("plastic-local-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let slots = Slot::plan(3, &[], 3).unwrap();
        let mut ex = LocalExecutor::new(fake_program(&dir), slots, Some(Duration::from_millis(1500)));
        let jobs: Vec<TrialJob> = (0..3).map(|t| job(&dir, t)).collect();
        ex.launch(&jobs).unwrap();
        let start = Instant::now();
        let mut results = Vec::new();
        while results.len() < 3 && start.elapsed() < Duration::from_secs(20) {
            results.extend(ex.poll().unwrap());
            std::thread::sleep(Duration::from_millis(50));
        }
        results.sort_by_key(|r| r.trial);
        assert_eq!(results.iter().map(|r| r.status).collect::<Vec<_>>(), [TrialStatus::Ok, TrialStatus::Failed, TrialStatus::Timeout]);
        assert!(results[1].error.as_deref().unwrap().contains("status 2") && results[1].error.as_deref().unwrap().contains("error: boom"), "{:?}", results[1].error);
        assert!(start.elapsed() < Duration::from_secs(10), "the timed-out trial was not killed");
        // The executor wrote the failed and timed-out results: the files stay the truth.
        assert_eq!(TrialResult::read(&jobs[2].result()).unwrap().unwrap().status, TrialStatus::Timeout);
        assert_eq!(ex.running(), Vec::<usize>::new());
        // Every slot is free again.
        ex.launch(&[job(&dir, 3), job(&dir, 4), job(&dir, 5)]).unwrap();
        ex.cancel_all();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
