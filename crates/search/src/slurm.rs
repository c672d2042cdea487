//! Trials as the tasks of Slurm job arrays. Each [`TrialExecutor::launch`] writes one batch
//! script, `SEARCH/slurm/array-NNNN.sh`, and submits it with `sbatch`: task *i* of the array
//! runs the *i*-th trial of the launch as `plastic trial --dir SEARCH/trials/NNNN` (a sweep's:
//! `SWEEP/runs/NAME`; on the GPU Slurm gave it: `--device wgpu:slurm`,
//! `plastic_train::device::slurm_gpu_index`), and writes that trial's `result.json` into the
//! search directory, which cluster nodes share with the driver.
//!
//! The result file is the truth. The batch script itself records a trial that exits without one
//! (`failed`, with its exit status and the last line of its log) and one that Slurm stops at its
//! time limit (`timeout`, from a SIGTERM trap, in the KillWait seconds before SIGKILL). The driver
//! polls `squeue` for the tasks still queued or running; a task that left the queue without a
//! result file (its node died, the script was SIGKILLed) is recorded from `scontrol show job`:
//! `timeout` for `JobState=TIMEOUT`, `failed` otherwise. `sacct` is never needed (clusters and
//! the single-node set-up of `scripts/slurm_cluster.sh` may run no accounting).
//!
//! ```text
//! SEARCH/slurm/array-0004.sh      the script of trials 4-7 (resubmit it by hand with sbatch)
//! SEARCH/slurm/12_0.out           Slurm's output of task 0 of job 12 (the trial's own goes to its trial.log)
//! SEARCH/trials/0004/result.json  written by the trial, or by the script or the driver for it
//! ```
//!
//! Array indices are positions in the launch, not trial numbers: Slurm refuses indices at or
//! above `MaxArraySize` (1001 by default), which a long search's trial numbers would pass.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Result, SearchError};
use crate::executor::{TrialExecutor, TrialJob, TrialProgram};
use crate::local::last_line;
use crate::result::{TrialResult, TrialStatus, write_atomic};

/// The search file's `[slurm]` section: the resources of each trial's array task.
///
/// ```toml
/// [slurm]
/// partition = "gpu"
/// time = "02:00:00"
/// mem = "16G"
/// cpus_per_trial = 4
/// gpus_per_trial = 1
/// max_concurrent = 8                   # at most 8 tasks of an array at once (--array=…%8)
/// extra = ["#SBATCH --qos=short"]
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlurmConfig {
    /// `--partition`; the cluster's default partition when unset.
    pub partition: Option<String>,
    /// `--time`: each trial's time limit, in one of Slurm's forms (`MM`, `MM:SS`, `HH:MM:SS`,
    /// `D-HH`, `D-HH:MM`, `D-HH:MM:SS`, `UNLIMITED`). A trial past it is recorded `timeout`.
    pub time: String,
    /// `--mem`, memory per trial (`4G`, `500M`); the partition's default when unset.
    pub mem: Option<String>,
    /// `--cpus-per-task`, also the trial's `--threads`.
    pub cpus_per_trial: usize,
    /// `--gres=gpu:N`; with any GPU the trial runs on `--device wgpu:slurm`, else on the CPU.
    pub gpus_per_trial: usize,
    /// The array's throttle (`--array=…%N`): at most this many of its tasks run at once.
    pub max_concurrent: Option<usize>,
    /// More `#SBATCH` lines, as written (`"#SBATCH --qos=short"`, `"#SBATCH --constraint=a100"`).
    pub extra: Vec<String>,
    /// How often the driver asks `squeue`, in seconds; result files are looked for at every poll.
    pub poll_s: f64,
    /// How long a task that left the queue may take to show its result file before it is
    /// recorded as failed, in seconds: a shared file system can show a new file on the driver's
    /// node some time after the task wrote it (NFS caches directory entries for up to a minute).
    pub result_wait_s: f64,
    /// `--job-name`; `plastic-SEARCH` (the search directory's name) when unset.
    pub job_name: Option<String>,
}

impl Default for SlurmConfig {
    fn default() -> Self {
        Self {
            partition: None,
            time: "01:00:00".into(),
            mem: None,
            cpus_per_trial: 1,
            gpus_per_trial: 0,
            max_concurrent: None,
            extra: Vec::new(),
            poll_s: 10.0,
            result_wait_s: 60.0,
            job_name: None,
        }
    }
}

impl SlurmConfig {
    /// Checks every field, so that a bad section is one clear error before anything is submitted.
    pub fn validate(&self) -> std::result::Result<(), String> {
        time_limit_s(&self.time).map_err(|e| format!("time = {:?}: {e}", self.time))?;
        for (key, value) in [("partition", &self.partition), ("job_name", &self.job_name)] {
            if let Some(v) = value
                && (v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.,+".contains(c)))
            {
                return Err(format!("{key} = {v:?}: expected letters, digits and - _ . , +"));
            }
        }
        if let Some(mem) = &self.mem {
            let digits = mem.strip_suffix(['K', 'M', 'G', 'T', 'k', 'm', 'g', 't']).unwrap_or(mem);
            if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
                return Err(format!("mem = {mem:?}: expected a number with an optional K, M, G or T suffix (\"4G\")"));
            }
        }
        if self.cpus_per_trial == 0 {
            return Err("cpus_per_trial must be at least 1".into());
        }
        if self.max_concurrent == Some(0) {
            return Err("max_concurrent must be at least 1".into());
        }
        for line in &self.extra {
            let rest = line.strip_prefix("#SBATCH").unwrap_or("");
            if !rest.starts_with([' ', '\t']) || rest.trim().is_empty() || line.contains(['\n', '\r']) {
                return Err(format!("extra line {line:?}: each must be one `#SBATCH --option` line"));
            }
            let option = rest.trim_start();
            let name = option.split(['=', ' ', '\t']).next().unwrap_or("");
            if ["--array", "-a", "--output", "-o"].contains(&name) || option.starts_with("-a") || option.starts_with("-o") {
                return Err(format!("extra line {line:?}: the executor sets --array and --output itself"));
            }
        }
        for (key, v) in [("poll_s", self.poll_s), ("result_wait_s", self.result_wait_s)] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(format!("{key} must be a number of seconds >= 0, got {v}"));
            }
        }
        Ok(())
    }

    /// `--device` of the trials.
    pub fn device(&self) -> &'static str {
        if self.gpus_per_trial > 0 { "wgpu:slurm" } else { "cpu" }
    }
}

/// A Slurm time limit in seconds; `None` for none (`UNLIMITED`, `INFINITE`, `0`).
pub fn time_limit_s(time: &str) -> std::result::Result<Option<u64>, String> {
    const FORMS: &str = "expected MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS or UNLIMITED";
    let t = time.trim();
    if t.eq_ignore_ascii_case("unlimited") || t.eq_ignore_ascii_case("infinite") {
        return Ok(None);
    }
    let number = |s: &str| -> std::result::Result<u64, String> {
        if s.is_empty() || !s.chars().all(|c| c.is_ascii_digit()) || s.len() > 9 {
            return Err(FORMS.into());
        }
        s.parse().map_err(|_| FORMS.to_string())
    };
    let (days, clock) = match t.split_once('-') {
        Some((d, rest)) => (Some(number(d)?), rest),
        None => (None, t),
    };
    let parts = clock.split(':').map(number).collect::<std::result::Result<Vec<_>, _>>()?;
    let s = match (days, parts.as_slice()) {
        (None, [m]) => m * 60,
        (None, [m, s]) => m * 60 + s,
        (None, [h, m, s]) | (Some(_), [h, m, s]) => h * 3600 + m * 60 + s + days.unwrap_or(0) * 86400,
        (Some(d), [h]) => d * 86400 + h * 3600,
        (Some(d), [h, m]) => d * 86400 + h * 3600 + m * 60,
        _ => return Err(FORMS.into()),
    };
    Ok((s > 0).then_some(s))
}

/// What a Slurm command printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs Slurm's commands. [`SlurmCommands`] runs the real ones from `PATH`; tests drive the
/// executor with a fake scheduler here.
pub trait Slurm: Send {
    /// Runs `program` (`sbatch`, `squeue`, `scontrol` or `scancel`) with `args`.
    fn run(&self, program: &str, args: &[String]) -> std::io::Result<CommandOutput>;
}

/// The real `sbatch`, `squeue`, `scontrol` and `scancel`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SlurmCommands;

impl Slurm for SlurmCommands {
    fn run(&self, program: &str, args: &[String]) -> std::io::Result<CommandOutput> {
        let out = Command::new(program).args(args).stdin(Stdio::null()).output()?;
        Ok(CommandOutput { success: out.status.success(), stdout: String::from_utf8_lossy(&out.stdout).into(), stderr: String::from_utf8_lossy(&out.stderr).into() })
    }
}

/// How long `squeue` may keep failing (a busy or restarting controller) before a poll fails.
const SQUEUE_PATIENCE: Duration = Duration::from_secs(300);

/// One task not reported yet.
#[derive(Debug, Clone)]
struct Task {
    job: TrialJob,
    /// When a poll first found it gone from the queue without a result file.
    gone_since: Option<Instant>,
}

/// One submitted array.
#[derive(Debug, Clone)]
struct ArrayJob {
    id: String,
    cluster: Option<String>,
    /// Task *i* runs `trials[i]`.
    trials: Vec<usize>,
    /// By task index, the tasks whose trials have not been reported.
    waiting: BTreeMap<usize, Task>,
}

/// What [`SlurmExecutor::save`] remembers across a driver restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedJob {
    id: String,
    cluster: Option<String>,
    trials: Vec<usize>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Saved {
    jobs: Vec<SavedJob>,
}

/// Which tasks of one job `squeue` still lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Queued {
    /// The job is listed without task indices: all of its tasks count as queued.
    pub all: bool,
    pub tasks: BTreeSet<usize>,
}

impl Queued {
    fn contains(&self, index: usize) -> bool {
        self.all || self.tasks.contains(&index)
    }
}

/// Trials as Slurm job-array tasks.
pub struct SlurmExecutor {
    config: SlurmConfig,
    program: TrialProgram,
    search_dir: PathBuf,
    capacity: usize,
    slurm: Box<dyn Slurm>,
    jobs: Vec<ArrayJob>,
    last_squeue: Option<Instant>,
    squeue_failing_since: Option<Instant>,
}

impl SlurmExecutor {
    /// An executor for the search in `search_dir` that keeps up to `capacity` trials (a
    /// generation) submitted at once.
    pub fn new(config: SlurmConfig, program: TrialProgram, search_dir: PathBuf, capacity: usize) -> Self {
        Self { config, program, search_dir, capacity, slurm: Box::new(SlurmCommands), jobs: Vec::new(), last_squeue: None, squeue_failing_since: None }
    }

    /// The same executor talking to another scheduler (a fake one in tests).
    pub fn with_slurm(mut self, slurm: Box<dyn Slurm>) -> Self {
        self.slurm = slurm;
        self
    }

    /// The ids of the submitted jobs with trials not reported yet.
    pub fn job_ids(&self) -> Vec<String> {
        self.jobs.iter().map(|j| j.id.clone()).collect()
    }

    fn command(&self, program: &str, cluster: Option<&str>, args: &[String]) -> Result<CommandOutput> {
        let mut all = Vec::new();
        if let Some(c) = cluster {
            all.push(format!("--clusters={c}"));
        }
        all.extend_from_slice(args);
        self.slurm.run(program, &all).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                SearchError::Executor(format!("{program} not found: is Slurm installed? --executor slurm runs sbatch, squeue, scontrol and scancel from PATH"))
            } else {
                SearchError::Executor(format!("cannot run {program}: {e}"))
            }
        })
    }

    /// `squeue` for every job with waiting tasks: which of their tasks are still queued.
    fn queued(&self) -> Result<HashMap<String, Queued>> {
        let mut by_cluster: BTreeMap<Option<&str>, Vec<String>> = BTreeMap::new();
        for j in &self.jobs {
            by_cluster.entry(j.cluster.as_deref()).or_default().push(j.id.clone());
        }
        let mut queued = HashMap::new();
        for (cluster, ids) in by_cluster {
            match self.squeue(cluster, &ids)? {
                Some(q) => queued.extend(q),
                // One of several jobs is unknown: ask for each on its own.
                None => {
                    for id in ids {
                        queued.extend(self.squeue(cluster, std::slice::from_ref(&id))?.unwrap_or_default());
                    }
                }
            }
        }
        Ok(queued)
    }

    /// `None` when squeue refuses the list because a job in it has left Slurm's memory; a
    /// single such job is simply not queued.
    fn squeue(&self, cluster: Option<&str>, ids: &[String]) -> Result<Option<HashMap<String, Queued>>> {
        let args = ["-h".into(), "-r".into(), "-j".into(), ids.join(","), "-o".into(), "%i %T".into()];
        let out = self.command("squeue", cluster, &args)?;
        if out.success {
            return Ok(Some(parse_squeue(&out.stdout)));
        }
        if out.stderr.contains("Invalid job id") {
            return Ok(if ids.len() == 1 { Some(HashMap::new()) } else { None });
        }
        Err(SearchError::Executor(format!("squeue failed: {}", first_line(&out.stderr))))
    }

    /// Why a task without a result left the queue, from `scontrol show job ID_INDEX`.
    fn stopped_result(&self, job: &ArrayJob, index: usize, task: &Task) -> Result<Gone> {
        let name = format!("{}_{index}", job.id);
        let out = self.command("scontrol", job.cluster.as_deref(), &["show".into(), "job".into(), name.clone()])?;
        let forgotten = out.stderr.contains("Invalid job id") || out.stderr.contains("not found");
        let info = if out.success { parse_scontrol(&out.stdout) } else { None };
        // A controller that does not answer now may later; give up on it after a while.
        let patience = Duration::from_secs_f64(self.config.result_wait_s) + SQUEUE_PATIENCE;
        if !out.success && !forgotten && task.gone_since.is_some_and(|t| t.elapsed() < patience) {
            return Ok(Gone::AskAgain);
        }
        let slurm_out = self.search_dir.join("slurm").join(format!("{name}.out"));
        let tail = last_line(&task.job.log()).map(|l| format!(": {l}")).unwrap_or_default();
        let logs = format!("(log: {}; Slurm's: {})", task.job.log().display(), slurm_out.display());
        let (status, error) = match info {
            Some(s) if ["PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "REQUEUED", "RESIZING", "REQUEUE_HOLD", "REQUEUE_FED", "STAGE_OUT", "SIGNALING"].contains(&s.state.as_str()) => {
                return Ok(Gone::StillThere); // squeue missed it
            }
            Some(s) => {
                let status = if s.state == "TIMEOUT" { TrialStatus::Timeout } else { TrialStatus::Failed };
                (status, format!("Slurm job {name} ended {} (reason {}, exit code {}) without a result{tail} {logs}", s.state, s.reason, s.exit_code))
            }
            None if out.success || forgotten => (TrialStatus::Failed, format!("Slurm job {name} left the queue without a result (scontrol no longer knows it){tail} {logs}")),
            None => (TrialStatus::Failed, format!("Slurm job {name} left the queue without a result (scontrol: {}){tail} {logs}", first_line(&out.stderr))),
        };
        Ok(Gone::Stopped(TrialResult::stopped(task.job.trial, status, error, None)))
    }
}

/// What became of a task that squeue no longer lists and that has no result file.
enum Gone {
    /// scontrol says it is still queued or running.
    StillThere,
    /// scontrol did not answer: ask at the next poll.
    AskAgain,
    /// It ended: the result to record for it.
    Stopped(TrialResult),
}

/// `sbatch --parsable`'s answer: the job id and, on a multi-cluster set-up, the cluster.
pub fn parse_sbatch(stdout: &str) -> std::result::Result<(String, Option<String>), String> {
    let line = stdout.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or("");
    let (id, cluster) = match line.split_once(';') {
        Some((id, c)) => (id, Some(c.trim().to_string()).filter(|c| !c.is_empty())),
        None => (line, None),
    };
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("sbatch --parsable printed {:?}, not a job id", stdout.trim()));
    }
    Ok((id.to_string(), cluster))
}

/// `squeue -h -r -o "%i %T"`'s lines (`12_4 RUNNING`, or without `-r` `12_[5-7%2] PENDING`),
/// by job id.
pub fn parse_squeue(stdout: &str) -> HashMap<String, Queued> {
    let mut jobs: HashMap<String, Queued> = HashMap::new();
    for line in stdout.lines() {
        let Some(id) = line.split_whitespace().next() else { continue };
        if line.starts_with("CLUSTER:") {
            continue;
        }
        let (job, tasks) = id.split_once('_').unwrap_or((id, ""));
        if job.is_empty() || !job.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let entry = jobs.entry(job.to_string()).or_default();
        if tasks.is_empty() {
            entry.all = true;
        } else if let Some(spec) = tasks.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            match expand_indices(spec.split('%').next().unwrap_or("")) {
                Some(indices) => entry.tasks.extend(indices),
                None => entry.all = true, // cannot read it: do not call its tasks gone
            }
        } else {
            match tasks.parse() {
                Ok(i) => {
                    entry.tasks.insert(i);
                }
                Err(_) => entry.all = true,
            }
        }
    }
    jobs
}

/// An array index list: `4-7,9,10-20:5`.
fn expand_indices(spec: &str) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    for part in spec.split(',') {
        let (range, step) = part.split_once(':').map_or((part, "1"), |(r, s)| (r, s));
        let step: usize = step.parse().ok().filter(|&s| s > 0)?;
        let (a, b) = range.split_once('-').unwrap_or((range, range));
        let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
        if b < a || (b - a) / step > 1_000_000 {
            return None;
        }
        out.extend((a..=b).step_by(step));
    }
    Some(out)
}

/// What `scontrol show job` says about a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobInfo {
    pub state: String,
    pub reason: String,
    pub exit_code: String,
}

/// `JobState=`, `Reason=` and `ExitCode=` of `scontrol show job`'s first record.
pub fn parse_scontrol(stdout: &str) -> Option<JobInfo> {
    let field = |key: &str| stdout.split_whitespace().find_map(|w| w.strip_prefix(key)).map(String::from);
    let state = field("JobState=")?;
    Some(JobInfo { state, reason: field("Reason=").unwrap_or_else(|| "None".into()), exit_code: field("ExitCode=").unwrap_or_else(|| "?".into()) })
}

fn first_line(s: &str) -> &str {
    s.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("no message")
}

/// `s` as one bash word: in single quotes, each `'` as `'\''`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `s` as the inside of a JSON string.
fn json_inner(s: &str) -> String {
    let quoted = serde_json::to_string(s).expect("a string serialises");
    quoted[1..quoted.len() - 1].to_string()
}

/// `path` made absolute against the current directory (the driver's, which is also the
/// directory sbatch starts the tasks in).
fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).map_err(|e| SearchError::io(path, e))
}

/// The batch script of one array: task *i* runs `jobs[i]`. `search_dir` must be absolute and
/// each job's directory inside it (`trials/NNNN`, `runs/NAME`), named with letters, digits and
/// `. _ + -` only, so that the script can carry it unquoted into JSON and Slurm's lines.
pub fn array_script(config: &SlurmConfig, program: &TrialProgram, search_dir: &Path, jobs: &[TrialJob]) -> Result<String> {
    config.validate().map_err(|e| SearchError::Invalid(format!("slurm: {e}")))?;
    if jobs.is_empty() {
        return Err(SearchError::Executor("a Slurm job array needs at least one trial".into()));
    }
    if !search_dir.is_absolute() {
        return Err(SearchError::Executor(format!("the search directory {} must be absolute in a batch script", search_dir.display())));
    }
    let search = search_dir.to_str().ok_or_else(|| SearchError::Invalid(format!("{}: a search directory for Slurm must be valid UTF-8", search_dir.display())))?;
    // #SBATCH lines are split at white space and `%` starts one of Slurm's file-name patterns.
    if search.chars().any(|c| c.is_whitespace() || c.is_control() || "%\"'\\".contains(c)) {
        return Err(SearchError::Invalid(format!("{search}: a search directory for Slurm must not hold spaces, quotes, backslashes or %, which #SBATCH lines cannot carry")));
    }
    let mut seen = BTreeSet::new();
    let mut dirs = Vec::new();
    for job in jobs {
        let dir = absolute(&job.dir)?;
        let relative = dir.strip_prefix(search_dir).ok().and_then(Path::to_str).filter(|r| {
            !r.is_empty() && r.split('/').all(|c| !c.is_empty() && c != "." && c != "..") && r.chars().all(|c| c.is_ascii_alphanumeric() || "._+-/".contains(c))
        });
        let Some(relative) = relative else {
            return Err(SearchError::Executor(format!(
                "trial {}'s directory {} is not a plainly named folder inside {}: the batch script finds trials by their path in the search directory",
                job.trial,
                job.dir.display(),
                search_dir.display()
            )));
        };
        if !seen.insert(job.trial) {
            return Err(SearchError::Executor(format!("trial {} is twice in one launch", job.trial)));
        }
        dirs.push(relative.to_string());
    }
    // A program named by path runs from any directory; a bare name is looked up on the node's PATH.
    let program = if program.program.components().count() > 1 { absolute(&program.program)? } else { program.program.clone() };
    let program = program.to_str().ok_or_else(|| SearchError::Invalid(format!("{}: the plastic binary's path must be valid UTF-8", program.display())))?.to_string();
    let limit_s = time_limit_s(&config.time).map_err(SearchError::Invalid)?.unwrap_or(0);
    let name = config.job_name.clone().unwrap_or_else(|| {
        let dir: String = search_dir.file_name().and_then(|n| n.to_str()).unwrap_or("search").chars().filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c)).collect();
        format!("plastic-{dir}")
    });
    let trials: Vec<String> = jobs.iter().map(|j| j.trial.to_string()).collect();
    let last = jobs.len() - 1;
    let mut array = if last == 0 { "0".to_string() } else { format!("0-{last}") };
    if let Some(n) = config.max_concurrent {
        array += &format!("%{n}");
    }

    let mut s = String::new();
    s += "#!/bin/bash\n";
    s += &format!("# Trials {} of the search in {search}, one per task of this job array: task i runs\n", trials.join(", "));
    s += "# the i-th of them. Written by plastic's Slurm executor; `sbatch` it again to rerun them.\n";
    s += &format!("#SBATCH --job-name={name}\n");
    s += &format!("#SBATCH --array={array}\n");
    s += &format!("#SBATCH --output={search}/slurm/%A_%a.out\n");
    s += "#SBATCH --open-mode=append\n";
    s += "#SBATCH --nodes=1\n#SBATCH --ntasks=1\n";
    s += &format!("#SBATCH --cpus-per-task={}\n", config.cpus_per_trial);
    s += &format!("#SBATCH --time={}\n", config.time.trim());
    if let Some(mem) = &config.mem {
        s += &format!("#SBATCH --mem={mem}\n");
    }
    if let Some(p) = &config.partition {
        s += &format!("#SBATCH --partition={p}\n");
    }
    if config.gpus_per_trial > 0 {
        s += &format!("#SBATCH --gres=gpu:{}\n", config.gpus_per_trial);
    }
    for line in &config.extra {
        s += line.trim_end();
        s += "\n";
    }
    s += &format!(
        r#"
set -u
search={search_sh}
search_json={search_json}   # the same, escaped for a JSON string
program={program_sh}
trials=({trials})
dirs=({dirs})   # each trial's directory in the search directory
limit_s={limit_s}   # --time in seconds (0: none)

trial=${{trials[$SLURM_ARRAY_TASK_ID]}}
dir="$search/${{dirs[$SLURM_ARRAY_TASK_ID]}}"
dir_json="$search_json/${{dirs[$SLURM_ARRAY_TASK_ID]}}"
result="$dir/result.json"
log="$dir/trial.log"
echo "trial $trial in $dir: task ${{SLURM_ARRAY_JOB_ID:-?}}_$SLURM_ARRAY_TASK_ID on $(hostname), CUDA_VISIBLE_DEVICES=${{CUDA_VISIBLE_DEVICES:-}}"

# Writes result.json with status $1 and error $2 (JSON-escaped) unless the trial wrote one: a
# temporary file, then a hard link, which fails where the trial's file already is.
stopped() {{
    [ -e "$result" ] && return 0
    local tmp="$dir/.result.json.slurm-$$"
    printf '{{"trial":%d,"status":"%s","validation_accuracy":null,"test_accuracy":null,"params":null,"units":null,"wall_s":%d,"error":"%s"}}\n' \
        "$trial" "$1" "$SECONDS" "$2" >"$tmp" || return 1
    ln "$tmp" "$result" 2>/dev/null || [ -e "$result" ] || mv -f "$tmp" "$result"
    rm -f "$tmp"
}}

# At the time limit Slurm sends SIGTERM to this script and the trial, and SIGKILL KillWait
# seconds later; scancel does the same. Only the time limit makes a result (`timeout`): a
# cancelled trial has none, so that a resumed search runs it again.
on_term() {{
    if {{ [ "$limit_s" -gt 0 ] && [ "$SECONDS" -ge $((limit_s - 5)) ]; }} \
        || [ "$(timeout 2 squeue -h -j "${{SLURM_JOB_ID:-0}}" -o %r 2>/dev/null)" = TimeLimit ]; then
        stopped timeout "killed at Slurm's time limit (--time={time}) after $SECONDS s (log: $dir_json/trial.log)"
    fi
    [ -n "${{child:-}}" ] && kill -TERM "$child" 2>/dev/null && wait "$child" 2>/dev/null
    exit 143
}}
trap on_term TERM

if [ ! -d "$dir" ]; then
    echo "no trial directory $dir" >&2
    exit 1
fi
{program_var} trial --dir "$dir" --device {device} --threads {threads} >>"$log" 2>&1 &
child=$!
wait "$child"
status=$?
if [ ! -e "$result" ]; then
    case $status in
        137) how="was killed (signal 9; out of memory?)" ;;
        1[3-9][0-9] | 2[0-5][0-9]) how="was killed by signal $((status - 128))" ;;
        *) how="exited with status $status" ;;
    esac
    # The last line of the log (progress bars redraw with carriage returns), JSON-escaped.
    tail=$(tail -c 4096 "$log" 2>/dev/null | tr '\r' '\n' | sed -e 's/[[:space:]]*$//' | grep -v '^$' | tail -n 1 | tr -d '\000-\037' | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')
    stopped failed "the trial process $how without a result${{tail:+: $tail}} (log: $dir_json/trial.log)"
fi
exit $status
"#,
        search_sh = sh_quote(search),
        search_json = sh_quote(&json_inner(search)),
        program_sh = sh_quote(&program),
        program_var = "\"$program\"",
        trials = trials.join(" "),
        dirs = dirs.join(" "),
        time = config.time.trim(),
        device = config.device(),
        threads = config.cpus_per_trial,
    );
    Ok(s)
}

impl TrialExecutor for SlurmExecutor {
    fn name(&self) -> &'static str {
        "slurm"
    }

    fn capacity(&self) -> usize {
        self.capacity
    }

    fn launch(&mut self, jobs: &[TrialJob]) -> Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        let search_dir = absolute(&self.search_dir)?;
        let script = array_script(&self.config, &self.program, &search_dir, jobs)?;
        let first = jobs.iter().map(|j| j.trial).min().expect("not empty");
        let path = search_dir.join("slurm").join(format!("array-{first:04}.sh"));
        write_atomic(&path, script.as_bytes())?;
        let out = self.command("sbatch", None, &["--parsable".into(), path.display().to_string()])?;
        if !out.success {
            return Err(SearchError::Executor(format!("sbatch {} failed: {}", path.display(), first_line(&out.stderr))));
        }
        let (id, cluster) = parse_sbatch(&out.stdout).map_err(SearchError::Executor)?;
        let waiting = jobs.iter().enumerate().map(|(i, j)| (i, Task { job: j.clone(), gone_since: None })).collect();
        self.jobs.push(ArrayJob { id, cluster, trials: jobs.iter().map(|j| j.trial).collect(), waiting });
        Ok(())
    }

    fn poll(&mut self) -> Result<Vec<TrialResult>> {
        let mut done = Vec::new();
        // A result file is the truth, whatever Slurm says: look for them at every poll.
        for job in &mut self.jobs {
            job.waiting.retain(|_, task| match read_result(&task.job) {
                Some(r) => {
                    done.push(r);
                    false
                }
                None => true,
            });
        }
        self.jobs.retain(|j| !j.waiting.is_empty());
        let due = self.last_squeue.is_none_or(|t| t.elapsed().as_secs_f64() >= self.config.poll_s);
        if self.jobs.is_empty() || !due {
            return Ok(done);
        }
        self.last_squeue = Some(Instant::now());
        let queued = match self.queued() {
            Ok(q) => {
                self.squeue_failing_since = None;
                q
            }
            Err(e) => {
                let since = *self.squeue_failing_since.get_or_insert_with(Instant::now);
                // squeue missing is not going to get better; a busy controller may.
                if e.to_string().starts_with("squeue not found") || since.elapsed() > SQUEUE_PATIENCE {
                    return Err(e);
                }
                return Ok(done);
            }
        };
        let now = Instant::now();
        let wait = Duration::from_secs_f64(self.config.result_wait_s);
        let mut gone = Vec::new();
        for (j, job) in self.jobs.iter_mut().enumerate() {
            let q = queued.get(&job.id);
            for (&index, task) in &mut job.waiting {
                if q.is_some_and(|q| q.contains(index)) {
                    task.gone_since = None;
                    continue;
                }
                // Gone from the queue: its result file may not be visible here yet.
                let since = *task.gone_since.get_or_insert(now);
                if now.duration_since(since) >= wait {
                    gone.push((j, index));
                }
            }
        }
        for (j, index) in gone {
            let task = self.jobs[j].waiting[&index].clone();
            if let Some(r) = read_result(&task.job) {
                done.push(r);
            } else {
                let made = match self.stopped_result(&self.jobs[j], index, &task)? {
                    Gone::Stopped(r) => r,
                    Gone::StillThere => {
                        self.jobs[j].waiting.get_mut(&index).expect("waiting").gone_since = None;
                        continue;
                    }
                    Gone::AskAgain => continue,
                };
                // The file stays the truth: written unless the trial's own appeared meanwhile.
                done.push(write_if_absent(&task.job, &made)?);
            }
            self.jobs[j].waiting.remove(&index);
        }
        self.jobs.retain(|j| !j.waiting.is_empty());
        Ok(done)
    }

    fn running(&self) -> Vec<usize> {
        let mut trials: Vec<usize> = self.jobs.iter().flat_map(|j| j.waiting.values().map(|t| t.job.trial)).collect();
        trials.sort_unstable();
        trials
    }

    fn cancel_all(&mut self) {
        let mut by_cluster: BTreeMap<Option<String>, Vec<String>> = BTreeMap::new();
        for j in &self.jobs {
            by_cluster.entry(j.cluster.clone()).or_default().push(j.id.clone());
        }
        for (cluster, ids) in by_cluster {
            let _ = self.command("scancel", cluster.as_deref(), &ids);
        }
        self.jobs.clear();
    }

    fn save(&self) -> serde_json::Value {
        let jobs = self.jobs.iter().map(|j| SavedJob { id: j.id.clone(), cluster: j.cluster.clone(), trials: j.trials.clone() }).collect();
        serde_json::to_value(Saved { jobs }).expect("plain data")
    }

    fn restore(&mut self, saved: &serde_json::Value, running: &[TrialJob]) -> Result<Vec<TrialJob>> {
        let saved: Saved = if saved.is_null() {
            Saved::default()
        } else {
            serde_json::from_value(saved.clone()).map_err(|e| SearchError::Invalid(format!("the Slurm executor's saved state: {e}")))?
        };
        self.jobs = saved.jobs.into_iter().map(|s| ArrayJob { id: s.id, cluster: s.cluster, trials: s.trials, waiting: BTreeMap::new() }).collect();
        self.last_squeue = None;
        let mut lost = Vec::new();
        for job in running {
            // The latest job that holds the trial runs it.
            let found = self.jobs.iter_mut().rev().find_map(|j| j.trials.iter().position(|&t| t == job.trial).map(|i| (j, i)));
            match found {
                Some((j, i)) => {
                    j.waiting.insert(i, Task { job: job.clone(), gone_since: None });
                }
                None => lost.push(job.clone()),
            }
        }
        self.jobs.retain(|j| !j.waiting.is_empty());
        Ok(lost)
    }
}

/// The trial's result file, if it is there; one that cannot be read is a failed trial.
fn read_result(job: &TrialJob) -> Option<TrialResult> {
    match job.read_result() {
        Ok(r) => r,
        Err(e) => Some(TrialResult::stopped(job.trial, TrialStatus::Failed, format!("unreadable result file: {e}"), None)),
    }
}

/// Writes `result` as the trial's result file unless one appeared meanwhile (then that one is
/// the result): a temporary file hard-linked to the name, which fails where a file is.
fn write_if_absent(job: &TrialJob, result: &TrialResult) -> Result<TrialResult> {
    let path = job.result();
    let tmp = job.dir.join(format!(".result.json.driver-{}", std::process::id()));
    result.write(&tmp)?;
    let linked = std::fs::hard_link(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(result.clone()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(read_result(job).unwrap_or_else(|| result.clone())),
        // A file system without hard links: the plain atomic write.
        Err(_) => {
            result.write(&path)?;
            Ok(result.clone())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("plastic-slurm-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn jobs(search: &Path, trials: impl IntoIterator<Item = usize>) -> Vec<TrialJob> {
        trials
            .into_iter()
            .map(|t| {
                let dir = search.join("trials").join(format!("{t:04}"));
                std::fs::create_dir_all(&dir).unwrap();
                TrialJob { trial: t, dir }
            })
            .collect()
    }

    fn ok_result(trial: usize) -> TrialResult {
        TrialResult { trial, status: TrialStatus::Ok, validation_accuracy: Some(0.75), test_accuracy: Some(0.7), params: Some(100), units: Some(10), wall_s: Some(1.0), error: None }
    }

    /// A scheduler in memory: `sbatch` queues every task of the array, tests take tasks out of
    /// the queue and set what `scontrol` says about them.
    #[derive(Default)]
    struct FakeState {
        calls: Vec<String>,
        next_id: usize,
        cluster: Option<String>,
        scripts: Vec<String>,
        /// job id → queued task indices
        queue: BTreeMap<String, BTreeSet<usize>>,
        /// "ID_INDEX" → scontrol's output
        scontrol: HashMap<String, String>,
        squeue_error: Option<String>,
        scontrol_error: Option<String>,
        /// Refuse a list of jobs with an unknown one in it (squeue 22.05 only refuses one job).
        strict: bool,
        missing: bool,
    }

    #[derive(Clone, Default)]
    struct Fake(Arc<Mutex<FakeState>>);

    impl Slurm for Fake {
        fn run(&self, program: &str, args: &[String]) -> std::io::Result<CommandOutput> {
            let mut s = self.0.lock().unwrap();
            s.calls.push(format!("{program} {}", args.join(" ")));
            if s.missing {
                return Err(std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory"));
            }
            let ok = |stdout: String| Ok(CommandOutput { success: true, stdout, stderr: String::new() });
            let err = |stderr: &str| Ok(CommandOutput { success: false, stdout: String::new(), stderr: stderr.into() });
            let args: Vec<&String> = args.iter().filter(|a| !a.starts_with("--clusters=")).collect();
            match program {
                "sbatch" => {
                    let script = std::fs::read_to_string(args.last().unwrap()).unwrap();
                    let n = script.lines().find_map(|l| l.strip_prefix("#SBATCH --array=")).map(|a| expand_indices(a.split('%').next().unwrap()).unwrap()).unwrap();
                    s.next_id += 1;
                    let id = (s.next_id + 10).to_string();
                    s.queue.insert(id.clone(), n.into_iter().collect());
                    s.scripts.push(script);
                    ok(match &s.cluster {
                        Some(c) => format!("{id};{c}\n"),
                        None => format!("{id}\n"),
                    })
                }
                "squeue" => {
                    if let Some(e) = &s.squeue_error {
                        return err(&e.clone());
                    }
                    let ids: Vec<&str> = args[3].split(',').collect();
                    let known: Vec<&&str> = ids.iter().filter(|i| s.queue.contains_key(**i)).collect();
                    if (ids.len() == 1 || s.strict) && known.len() < ids.len() {
                        return err("slurm_load_jobs error: Invalid job id specified\n");
                    }
                    let mut out = String::new();
                    for id in known {
                        for t in &s.queue[*id] {
                            out += &format!("{id}_{t} RUNNING\n");
                        }
                    }
                    ok(out)
                }
                "scontrol" if s.scontrol_error.is_some() => err(&s.scontrol_error.clone().unwrap()),
                "scontrol" => match s.scontrol.get(args[2].as_str()) {
                    Some(text) => ok(text.clone()),
                    None => err("slurm_load_jobs error: Invalid job id specified\n"),
                },
                "scancel" => {
                    for id in args {
                        s.queue.remove(id.as_str());
                    }
                    ok(String::new())
                }
                _ => panic!("unexpected {program}"),
            }
        }
    }

    impl Fake {
        fn leave(&self, job: &str, index: usize) {
            self.0.lock().unwrap().queue.get_mut(job).unwrap().remove(&index);
        }
        fn scontrol(&self, task: &str, state: &str, reason: &str) {
            let text = format!("JobId=99 ArrayJobId=12 ArrayTaskId=0 JobName=x\n   JobState={state} Reason={reason} Dependency=(null)\n   Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:15\n");
            self.0.lock().unwrap().scontrol.insert(task.into(), text);
        }
        fn calls(&self, program: &str) -> Vec<String> {
            self.0.lock().unwrap().calls.iter().filter(|c| c.starts_with(program)).cloned().collect()
        }
    }

    fn config() -> SlurmConfig {
        SlurmConfig { poll_s: 0.0, result_wait_s: 0.0, ..SlurmConfig::default() }
    }

    fn executor(search: &Path, config: SlurmConfig, fake: &Fake) -> SlurmExecutor {
        SlurmExecutor::new(config, TrialProgram::new("/opt/plastic/bin/plastic"), search.to_path_buf(), 4).with_slurm(Box::new(fake.clone()))
    }

    #[test]
    fn config_parses_with_defaults_and_refuses_what_slurm_would() {
        let c: SlurmConfig = toml::from_str("partition = \"gpu\"\ngpus_per_trial = 1\nextra = [\"#SBATCH --qos=short\"]").unwrap();
        assert_eq!((c.time.as_str(), c.cpus_per_trial, c.poll_s, c.device()), ("01:00:00", 1, 10.0, "wgpu:slurm"));
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(SlurmConfig::default().device(), "cpu");
        assert!(toml::from_str::<SlurmConfig>("partiton = \"gpu\"").unwrap_err().to_string().contains("unknown field"));
        for (edit, says) in [
            (SlurmConfig { time: "1:2:3:4".into(), ..config() }, "time"),
            (SlurmConfig { time: "an hour".into(), ..config() }, "time"),
            (SlurmConfig { mem: Some("4 GB".into()), ..config() }, "mem"),
            (SlurmConfig { partition: Some("gpu a100".into()), ..config() }, "partition"),
            (SlurmConfig { cpus_per_trial: 0, ..config() }, "cpus_per_trial"),
            (SlurmConfig { max_concurrent: Some(0), ..config() }, "max_concurrent"),
            (SlurmConfig { extra: vec!["--qos=short".into()], ..config() }, "#SBATCH"),
            (SlurmConfig { extra: vec!["#SBATCH".into()], ..config() }, "#SBATCH"),
            (SlurmConfig { extra: vec!["#SBATCH --array=0-9".into()], ..config() }, "--array"),
            (SlurmConfig { extra: vec!["#SBATCH -o x.out".into()], ..config() }, "--output"),
            (SlurmConfig { poll_s: -1.0, ..config() }, "poll_s"),
        ] {
            let e = edit.validate().unwrap_err();
            assert!(e.contains(says), "{e:?} should mention {says}");
        }
    }

    #[test]
    fn time_limits_in_each_of_slurms_forms() {
        for (t, s) in [("30", Some(1800)), ("1:30", Some(90)), ("01:00:00", Some(3600)), ("2-0", Some(172800)), ("1-2:3", Some(93780)), ("1-00:00:10", Some(86410)), ("UNLIMITED", None), ("0", None)] {
            assert_eq!(time_limit_s(t), Ok(s), "{t}");
        }
        for t in ["", "1:2:3:4", "-1", "1-2:3:4:5", "1h", "1::2"] {
            assert!(time_limit_s(t).is_err(), "{t}");
        }
    }

    #[test]
    fn script_asks_for_the_resources_and_maps_tasks_to_trial_directories() {
        let search = temp_dir("script");
        let c = SlurmConfig {
            partition: Some("gpu".into()),
            time: "00:30:00".into(),
            mem: Some("4G".into()),
            cpus_per_trial: 2,
            gpus_per_trial: 1,
            max_concurrent: Some(2),
            extra: vec!["#SBATCH --qos=short".into()],
            job_name: Some("rgc".into()),
            ..config()
        };
        let s = array_script(&c, &TrialProgram::new("/opt/plastic"), &search, &jobs(&search, [4, 5, 6, 9])).unwrap();
        let lines: Vec<&str> = s.lines().filter(|l| l.starts_with("#SBATCH")).collect();
        let out = format!("#SBATCH --output={}/slurm/%A_%a.out", search.display());
        for want in ["#SBATCH --array=0-3%2", "#SBATCH --cpus-per-task=2", "#SBATCH --time=00:30:00", "#SBATCH --mem=4G", "#SBATCH --partition=gpu", "#SBATCH --gres=gpu:1", "#SBATCH --job-name=rgc", "#SBATCH --qos=short", out.as_str()] {
            assert!(lines.contains(&want), "{want} missing from\n{s}");
        }
        // #SBATCH lines are read only before the first command.
        let first_command = s.lines().position(|l| !l.starts_with('#') && !l.is_empty()).unwrap();
        assert!(s.lines().skip(first_command).all(|l| !l.starts_with("#SBATCH")));
        assert!(s.contains("trials=(4 5 6 9)\n") && s.contains("limit_s=1800 ") && s.contains("trap on_term TERM"), "{s}");
        assert!(s.contains(r#""$program" trial --dir "$dir" --device wgpu:slurm --threads 2 >>"$log" 2>&1 &"#), "{s}");
        // Without GPUs: the CPU, no gres, no throttle, a default name; a one-task array.
        let s = array_script(&config(), &TrialProgram::new("/opt/plastic"), &search, &jobs(&search, [7])).unwrap();
        assert!(s.contains("--device cpu --threads 1") && !s.contains("--gres") && !s.contains("--partition"), "{s}");
        assert!(s.contains("#SBATCH --array=0\n") && s.contains(&format!("#SBATCH --job-name=plastic-{}\n", search.file_name().unwrap().to_str().unwrap())), "{s}");
        // bash reads it.
        let path = search.join("check.sh");
        std::fs::write(&path, &s).unwrap();
        let check = Command::new("bash").arg("-n").arg(&path).output().unwrap();
        assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
        // A trial directory elsewhere, a relative search directory or one #SBATCH cannot hold.
        let wrong = vec![TrialJob { trial: 3, dir: std::env::temp_dir().join("elsewhere/trials/0003") }];
        assert!(array_script(&config(), &TrialProgram::new("p"), &search, &wrong).unwrap_err().to_string().contains("not"));
        let quoted = vec![TrialJob { trial: 3, dir: search.join("runs/it's") }];
        assert!(array_script(&config(), &TrialProgram::new("p"), &search, &quoted).unwrap_err().to_string().contains("not a plainly named folder"));
        assert!(array_script(&config(), &TrialProgram::new("p"), Path::new("rel"), &jobs(&search, [1])).is_err());
        let spaced = search.join("a b");
        assert!(array_script(&config(), &TrialProgram::new("p"), &spaced, &jobs(&spaced, [1])).unwrap_err().to_string().contains("spaces"));
        let _ = std::fs::remove_dir_all(&search);
    }

    /// Runs the batch script as Slurm would run task `task` (without Slurm), with a fake
    /// `plastic` doing `body`; `term_after` sends the script SIGTERM that many seconds in.
    fn run_task(name: &str, time: &str, body: &str, term_after: Option<f64>) -> (PathBuf, TrialJob, std::process::ExitStatus) {
        let search = temp_dir(name);
        let program = search.join("fake plastic's");
        std::fs::write(&program, format!("#!/bin/bash\necho \"args: $*\"\n{body}\n")).unwrap();
        std::fs::set_permissions(&program, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let all = jobs(&search, [3, 8]);
        let c = SlurmConfig { time: time.into(), cpus_per_trial: 2, ..config() };
        let script = array_script(&c, &TrialProgram::new(&program), &search, &all).unwrap();
        let path = search.join("task.sh");
        std::fs::write(&path, script).unwrap();
        let mut child = Command::new("bash").arg(&path).env("SLURM_ARRAY_TASK_ID", "1").env("SLURM_ARRAY_JOB_ID", "12").env("SLURM_JOB_ID", "13").stdout(Stdio::null()).spawn().unwrap();
        if let Some(s) = term_after {
            std::thread::sleep(Duration::from_secs_f64(s));
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        }
        let status = child.wait().unwrap();
        (search, all[1].clone(), status)
    }

    #[test]
    fn task_runs_its_trial_and_keeps_the_trials_result() {
        let body = r#"printf '{"trial":8,"status":"ok","validation_accuracy":0.5,"test_accuracy":0.4,"params":10,"units":3,"wall_s":0.1,"error":null}' > "$3/result.json""#;
        let (search, job, status) = run_task("ok", "10", body, None);
        assert!(status.success());
        let log = std::fs::read_to_string(job.log()).unwrap();
        assert!(log.contains(&format!("args: trial --dir {} --device cpu --threads 2", job.dir.display())), "{log}");
        assert_eq!(TrialResult::read(&job.result()).unwrap().unwrap().validation_accuracy, Some(0.5));
        let _ = std::fs::remove_dir_all(&search);
    }

    #[test]
    fn a_sweeps_named_run_directories_run_and_report_under_their_numbers() {
        let search = temp_dir("named");
        let program = search.join("fake-plastic");
        // The trial writes the number it cannot know (0), as `plastic trial` does in `runs/NAME`.
        std::fs::write(&program, "#!/bin/bash\necho \"args: $*\"\nprintf '{\"trial\":0,\"status\":\"ok\",\"validation_accuracy\":0.5,\"test_accuracy\":null,\"params\":null,\"units\":null,\"wall_s\":0.1,\"error\":null}' > \"$3/result.json\"\n").unwrap();
        std::fs::set_permissions(&program, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let named: Vec<TrialJob> = ["backprop-adam-seed0", "feedback_alignment-sgd-seed1"]
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let dir = search.join("runs").join(n);
                std::fs::create_dir_all(&dir).unwrap();
                TrialJob { trial: 6 + i, dir }
            })
            .collect();
        let script = array_script(&config(), &TrialProgram::new(&program), &search, &named).unwrap();
        assert!(script.contains("trials=(6 7)\ndirs=(runs/backprop-adam-seed0 runs/feedback_alignment-sgd-seed1)"), "{script}");
        let path = search.join("task.sh");
        std::fs::write(&path, script).unwrap();
        let status = Command::new("bash").arg(&path).env("SLURM_ARRAY_TASK_ID", "1").stdout(Stdio::null()).status().unwrap();
        assert!(status.success());
        assert!(std::fs::read_to_string(named[1].log()).unwrap().contains(&format!("args: trial --dir {} ", named[1].dir.display())));
        // The executor reports it as trial 7, whatever the file says.
        let fake = Fake::default();
        let mut ex = executor(&search, config(), &fake);
        ex.restore(&serde_json::json!({ "jobs": [{ "id": "11", "cluster": null, "trials": [6, 7] }] }), &named).unwrap();
        fake.0.lock().unwrap().queue.insert("11".into(), BTreeSet::from([0]));
        let r = ex.poll().unwrap();
        assert_eq!(r.iter().map(|r| (r.trial, r.status)).collect::<Vec<_>>(), [(7, TrialStatus::Ok)]);
        let _ = std::fs::remove_dir_all(&search);
    }

    #[test]
    fn task_records_a_trial_that_exits_without_a_result() {
        let (search, job, status) = run_task("crash", "10", "echo 'error: out of \"memory\" \\ here' >&2\nexit 3", None);
        assert_eq!(status.code(), Some(3));
        let r = TrialResult::read(&job.result()).unwrap().expect("the script wrote a result");
        assert_eq!((r.trial, r.status), (8, TrialStatus::Failed));
        let e = r.error.unwrap();
        assert!(e.contains("exited with status 3") && e.contains(r#"error: out of "memory" \ here"#) && e.contains(&job.log().display().to_string()), "{e}");
        let _ = std::fs::remove_dir_all(&search);
    }

    #[test]
    fn task_at_its_time_limit_records_timeout_and_a_cancelled_one_nothing() {
        // `0:05`: SIGTERM at 1 s is within 5 s of the limit, so it is the time limit's.
        let (search, job, status) = run_task("timeout", "0:05", "sleep 30", Some(1.0));
        assert_eq!(status.code(), Some(143));
        let r = TrialResult::read(&job.result()).unwrap().expect("the trap wrote a result");
        assert_eq!((r.trial, r.status), (8, TrialStatus::Timeout));
        assert!(r.error.as_deref().unwrap().contains("time limit (--time=0:05)"), "{r:?}");
        let _ = std::fs::remove_dir_all(&search);
        // Ten minutes' limit, SIGTERM at 1 s: scancel. The trial is killed, no result.
        let start = Instant::now();
        let (search, job, status) = run_task("cancel", "10", "sleep 30", Some(1.0));
        assert_eq!(status.code(), Some(143));
        assert!(start.elapsed() < Duration::from_secs(10), "the trial was not killed");
        assert_eq!(TrialResult::read(&job.result()).unwrap(), None);
        let _ = std::fs::remove_dir_all(&search);
        // A trial that wrote its result before the signal keeps it.
        let body = r#"printf '{"trial":8,"status":"ok","validation_accuracy":0.5,"test_accuracy":null,"params":null,"units":null,"wall_s":0.1,"error":null}' > "$3/result.json"; sleep 30"#;
        let (search, job, _) = run_task("late", "0:05", body, Some(1.0));
        assert_eq!(TrialResult::read(&job.result()).unwrap().unwrap().status, TrialStatus::Ok);
        let _ = std::fs::remove_dir_all(&search);
    }

    #[test]
    fn parses_sbatch_squeue_and_scontrol() {
        assert_eq!(parse_sbatch("12\n"), Ok(("12".into(), None)));
        assert_eq!(parse_sbatch("12;gpu-cluster\n"), Ok(("12".into(), Some("gpu-cluster".into()))));
        assert!(parse_sbatch("Submitted batch job 12\n").is_err());
        assert!(parse_sbatch("").is_err());
        let q = parse_squeue("12_4 RUNNING\n12_[5-7%2] PENDING\n13_[0,2-6:2] PENDING\n14 PENDING\nCLUSTER: gpu\n\n15_1 COMPLETING\n");
        assert_eq!(q["12"].tasks, BTreeSet::from([4, 5, 6, 7]));
        assert_eq!(q["13"].tasks, BTreeSet::from([0, 2, 4, 6]));
        assert!(q["14"].all && q["14"].contains(99) && !q["12"].contains(8));
        assert!(q["15"].contains(1) && q.len() == 4);
        let info = parse_scontrol("JobId=4 ArrayJobId=3 ArrayTaskId=0 JobName=tl.sh\n   JobState=TIMEOUT Reason=TimeLimit Dependency=(null)\n   Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=143:0\n").unwrap();
        assert_eq!(info, JobInfo { state: "TIMEOUT".into(), reason: "TimeLimit".into(), exit_code: "143:0".into() });
        assert_eq!(parse_scontrol("slurm_load_jobs error: Invalid job id specified"), None);
    }

    #[test]
    fn poll_reports_results_and_records_tasks_that_left_without_one() {
        let search = temp_dir("poll");
        let fake = Fake::default();
        let mut ex = executor(&search, config(), &fake);
        let js = jobs(&search, [4, 5, 6, 7]);
        ex.launch(&js).unwrap();
        let script = search.join("slurm/array-0004.sh");
        assert_eq!(fake.calls("sbatch"), [format!("sbatch --parsable {}", script.display())]);
        assert!(std::fs::read_to_string(&script).unwrap().contains("trials=(4 5 6 7)"));
        assert_eq!(ex.running(), [4, 5, 6, 7]);
        assert_eq!(ex.poll().unwrap(), []);
        // A result file counts even while its task still shows in the queue.
        ok_result(4).write(&js[0].result()).unwrap();
        assert_eq!(ex.poll().unwrap(), [ok_result(4)]);
        // Three tasks leave without a result: a time limit, a failure, one scontrol forgot.
        fake.scontrol("11_1", "TIMEOUT", "TimeLimit");
        fake.scontrol("11_2", "FAILED", "NonZeroExitCode");
        for i in 1..4 {
            fake.leave("11", i);
        }
        let mut r = ex.poll().unwrap();
        r.sort_by_key(|r| r.trial);
        assert_eq!(r.iter().map(|r| (r.trial, r.status)).collect::<Vec<_>>(), [(5, TrialStatus::Timeout), (6, TrialStatus::Failed), (7, TrialStatus::Failed)]);
        let e = |i: usize| r[i].error.clone().unwrap();
        assert!(e(0).contains("11_1 ended TIMEOUT") && e(0).contains(&js[1].log().display().to_string()), "{}", e(0));
        assert!(e(1).contains("FAILED (reason NonZeroExitCode"), "{}", e(1));
        assert!(e(2).contains("no longer knows"), "{}", e(2));
        // Written into the result files, which stay the truth.
        for (i, res) in r.iter().enumerate() {
            assert_eq!(TrialResult::read(&js[i + 1].result()).unwrap().as_ref(), Some(res));
        }
        assert_eq!(ex.running(), Vec::<usize>::new());
        assert_eq!(ex.save(), serde_json::json!({ "jobs": [] }));
        let _ = std::fs::remove_dir_all(&search);
    }

    #[test]
    fn a_task_gone_from_the_queue_waits_for_its_result_file_to_show() {
        let search = temp_dir("race");
        let fake = Fake::default();
        let mut ex = executor(&search, SlurmConfig { result_wait_s: 3600.0, ..config() }, &fake);
        let js = jobs(&search, [0, 1]);
        ex.launch(&js).unwrap();
        fake.leave("11", 0);
        fake.scontrol("11_0", "COMPLETED", "None");
        // squeue no longer shows it, its file is not visible yet: not failed, still waiting.
        assert_eq!(ex.poll().unwrap(), []);
        assert_eq!(ex.running(), [0, 1]);
        assert!(fake.calls("scontrol").is_empty());
        ok_result(0).write(&js[0].result()).unwrap();
        assert_eq!(ex.poll().unwrap(), [ok_result(0)]);
        // Where scontrol says it is still running, squeue missed it: it stays.
        let mut ex = executor(&search, config(), &fake);
        ex.launch(&jobs(&search, [2])).unwrap();
        fake.leave("12", 0);
        fake.scontrol("12_0", "RUNNING", "None");
        assert_eq!(ex.poll().unwrap(), []);
        assert_eq!(ex.running(), [2]);
        // scontrol cannot reach the controller: asked again at the next poll, not failed.
        ex.launch(&jobs(&search, [3])).unwrap();
        fake.leave("13", 0);
        fake.0.lock().unwrap().scontrol_error = Some("slurm_load_jobs error: Unable to contact slurm controller (connect failure)".into());
        assert_eq!(ex.poll().unwrap(), []);
        assert_eq!(ex.running(), [2, 3]);
        fake.0.lock().unwrap().scontrol_error = None;
        fake.scontrol("13_0", "OUT_OF_MEMORY", "OutOfMemory");
        let r = ex.poll().unwrap();
        assert_eq!(r.iter().map(|r| (r.trial, r.status)).collect::<Vec<_>>(), [(3, TrialStatus::Failed)]);
        assert!(r[0].error.as_deref().unwrap().contains("ended OUT_OF_MEMORY"), "{r:?}");
        let _ = std::fs::remove_dir_all(&search);
    }

    #[test]
    fn squeue_failures_and_forgotten_jobs() {
        let search = temp_dir("squeue");
        let fake = Fake::default();
        let mut ex = executor(&search, config(), &fake);
        ex.launch(&jobs(&search, [0, 1])).unwrap();
        ex.launch(&jobs(&search, [2])).unwrap();
        // A controller that does not answer: nothing is decided, the poll does not fail.
        fake.0.lock().unwrap().squeue_error = Some("slurm_load_jobs error: Socket timed out on send/recv operation".into());
        assert_eq!(ex.poll().unwrap(), []);
        assert_eq!(ex.running(), [0, 1, 2]);
        fake.0.lock().unwrap().squeue_error = None;
        // Job 12 left Slurm's memory. squeue of 11,12 lists 11; where it refuses the list, each
        // job is asked on its own.
        fake.0.lock().unwrap().queue.remove("12");
        let r = ex.poll().unwrap();
        assert_eq!(r.iter().map(|r| (r.trial, r.status)).collect::<Vec<_>>(), [(2, TrialStatus::Failed)]);
        assert_eq!(ex.running(), [0, 1]);
        ex.launch(&jobs(&search, [4])).unwrap();
        fake.0.lock().unwrap().queue.remove("13");
        fake.0.lock().unwrap().strict = true;
        let r = ex.poll().unwrap();
        assert_eq!(r.iter().map(|r| (r.trial, r.status)).collect::<Vec<_>>(), [(4, TrialStatus::Failed)]);
        assert_eq!(ex.running(), [0, 1]);
        assert!(fake.calls("squeue").iter().any(|c| c.contains(" -j 11 ")), "{:?}", fake.calls("squeue"));
        fake.0.lock().unwrap().strict = false;
        // Throttled: with poll_s, no second squeue right away.
        let mut ex = executor(&search, SlurmConfig { poll_s: 3600.0, ..config() }, &fake);
        ex.launch(&jobs(&search, [3])).unwrap();
        let before = fake.calls("squeue").len();
        ex.poll().unwrap();
        ex.poll().unwrap();
        assert_eq!(fake.calls("squeue").len(), before + 1);
        let _ = std::fs::remove_dir_all(&search);
    }

    #[test]
    fn missing_sbatch_is_one_clear_line() {
        let search = temp_dir("missing");
        let fake = Fake::default();
        fake.0.lock().unwrap().missing = true;
        let e = executor(&search, config(), &fake).launch(&jobs(&search, [0])).unwrap_err();
        assert!(matches!(e, SearchError::Executor(_)));
        assert!(e.to_string().starts_with("sbatch not found: is Slurm installed?") && !e.to_string().contains('\n'), "{e}");
        // The real commands, with a program that is not there.
        let e = SlurmCommands.run("sbatch-not-installed-here", &[]).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
        let _ = std::fs::remove_dir_all(&search);
    }

    #[test]
    fn save_restore_and_cancel() {
        let search = temp_dir("restore");
        let fake = Fake::default();
        fake.0.lock().unwrap().cluster = Some("gpu".into());
        let mut ex = executor(&search, config(), &fake);
        let js = jobs(&search, 0..6);
        ex.launch(&js[..4]).unwrap();
        ex.launch(&js[4..]).unwrap();
        ok_result(1).write(&js[1].result()).unwrap();
        assert_eq!(ex.poll().unwrap(), [ok_result(1)]);
        // Every Slurm command names the job's cluster.
        assert!(fake.calls("squeue").iter().all(|c| c.starts_with("squeue --clusters=gpu ")), "{:?}", fake.calls("squeue"));
        let saved = ex.save();
        assert_eq!(saved, serde_json::json!({ "jobs": [{ "id": "11", "cluster": "gpu", "trials": [0, 1, 2, 3] }, { "id": "12", "cluster": "gpu", "trials": [4, 5] }] }));
        // The driver restarts: trials 0, 2, 3 and 5 had no result, 9 was proposed but never
        // submitted. The jobs keep running; only 9 must be launched again.
        let saved = serde_json::from_str(&saved.to_string()).unwrap();
        let mut again = executor(&search, config(), &fake);
        let running = [js[0].clone(), js[2].clone(), js[3].clone(), js[5].clone(), jobs(&search, [9]).remove(0)];
        let lost = again.restore(&saved, &running).unwrap();
        assert_eq!(lost.iter().map(|j| j.trial).collect::<Vec<_>>(), [9]);
        assert_eq!(again.running(), [0, 2, 3, 5]);
        // It follows them as before: task 2 of job 11 (trial 2) leaves having timed out.
        fake.scontrol("11_2", "TIMEOUT", "TimeLimit");
        fake.leave("11", 2);
        let r = again.poll().unwrap();
        assert_eq!(r.iter().map(|r| (r.trial, r.status)).collect::<Vec<_>>(), [(2, TrialStatus::Timeout)]);
        // Nothing saved (a local executor's state): every trial starts again.
        assert_eq!(executor(&search, config(), &fake).restore(&serde_json::Value::Null, &running).unwrap(), running);
        assert!(executor(&search, config(), &fake).restore(&serde_json::json!({ "job": 1 }), &running).is_err());
        // Interrupted: both jobs are cancelled and forgotten.
        again.cancel_all();
        assert_eq!(fake.calls("scancel"), ["scancel --clusters=gpu 11 12"]);
        assert_eq!(again.running(), Vec::<usize>::new());
        assert_eq!(again.save(), serde_json::json!({ "jobs": [] }));
        let _ = std::fs::remove_dir_all(&search);
    }
}
