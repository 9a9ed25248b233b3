//! `deltaward update`: the device's update through the site's mirrors.

use std::{
    io::IsTerminal,
    path::PathBuf,
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::Result;
use clap::Args;
use deltaward_mirror::{
    report::{Outcome, Report},
    update::{update, Event, Phase, Request},
    Limits,
};
use deltaward_release::check::StateDir;
use serde_json::json;

/// Update this device's image through the site's mirrors.
#[derive(Args, Debug)]
#[command(
    after_help = "Exit codes: 0 updated or already up to date; 10-17 the refusals of \
check-release; 3-7 the engine's; 20 no mirror reachable. Every attempt is reported to the \
mirror (POST /v1/reports) or queued in the state directory and sent on the next run."
)]
pub struct UpdateArgs {
    /// A mirror (or repository) URL; repeat to fail over in order.
    #[arg(long = "mirror", value_name = "URL", required = true)]
    mirrors: Vec<String>,
    /// Extra CA certificates (PEM) to trust for https:// mirrors.
    #[arg(long, value_name = "PEM")]
    mirror_ca: Option<PathBuf>,
    /// Product.
    #[arg(long)]
    product: String,
    /// The device's hardware id.
    #[arg(long)]
    hardware: String,
    /// The device's current image.
    #[arg(long, value_name = "CURRENT.img")]
    image: PathBuf,
    /// Where to write the new image (replaced atomically, only once verified).
    #[arg(long, short = 'o', value_name = "NEW.img")]
    output: PathBuf,
    /// The device's state directory (as check-release's: trusted root, highest counters).
    #[arg(long, value_name = "DIR")]
    state: PathBuf,
    /// Install this root.json as the trusted root first (provisioning).
    #[arg(long, value_name = "root.json")]
    init_root: Option<PathBuf>,
    /// The version the device runs (its patch is chosen by it; otherwise by the image's hash).
    #[arg(long = "current-version")]
    current_version: Option<String>,
    /// This device's id in the delivery report (default: the host name).
    #[arg(long)]
    device_id: Option<String>,
    /// One JSON event per line on stdout: phases, progress (at most twice a second), the result.
    #[arg(long)]
    json: bool,
}

pub fn run(a: UpdateArgs) -> Result<()> {
    let state = StateDir::new(&a.state);
    if let Some(r) = &a.init_root {
        let root = crate::input::read_bytes(r, "root.json", 256 << 10)?;
        state.init(&root)?;
    }
    let mut req = Request::new(
        a.mirrors.clone(),
        &a.product,
        &a.hardware,
        &a.image,
        &a.output,
        &a.state,
    );
    req.mirror_ca = a.mirror_ca.clone();
    req.current_version = a.current_version.clone();
    req.device_id = a.device_id.clone().unwrap_or_else(hostname);
    req.limits = Limits::default();
    req.exit_code = Some(crate::exit::code_of);
    let printer = Printer::new(a.json);
    let runtime = crate::commands::mirror::runtime()?;
    let (report, result) = runtime.block_on(update(&req, &|e| printer.event(e)));
    printer.finish(&report);
    result.map_err(anyhow::Error::from)
}

fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// Progress bars on a terminal, JSON lines with --json, quiet otherwise.
struct Printer {
    json: bool,
    bar: Mutex<Option<(Phase, indicatif::ProgressBar)>>,
    last: Mutex<Option<Instant>>,
}

impl Printer {
    fn new(json: bool) -> Self {
        Self {
            json,
            bar: Mutex::new(None),
            last: Mutex::new(None),
        }
    }

    fn event(&self, e: Event) {
        match e {
            Event::Phase(p) => {
                if self.json {
                    println!("{}", json!({"event": "phase", "phase": p}));
                }
                if let Some((_, b)) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    b.finish_and_clear();
                }
            }
            Event::Progress { phase, done, total } => {
                if self.json {
                    let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
                    let due = last.is_none_or(|t| t.elapsed() >= Duration::from_millis(500));
                    if due || done == total {
                        *last = Some(Instant::now());
                        println!(
                            "{}",
                            json!({"event": "progress", "phase": phase, "done": done, "total": total})
                        );
                    }
                    return;
                }
                if !std::io::stderr().is_terminal() {
                    return;
                }
                let mut bar = self.bar.lock().unwrap_or_else(|e| e.into_inner());
                if bar.as_ref().is_none_or(|(p, _)| *p != phase) {
                    let name = match phase {
                        Phase::Download => "download",
                        Phase::Apply => "apply",
                        _ => "work",
                    };
                    *bar = Some((phase, crate::progress::bytes(total, name)));
                }
                if let Some((_, b)) = bar.as_ref() {
                    b.set_position(done);
                }
            }
        }
    }

    fn finish(&self, r: &Report) {
        if let Some((_, b)) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).take() {
            b.finish_and_clear();
        }
        if self.json {
            println!("{}", json!({"event": "result", "report": r}));
            return;
        }
        let to =
            r.to.as_ref()
                .and_then(|t| t.version.clone())
                .unwrap_or_else(|| "?".into());
        match r.outcome {
            Outcome::Installed => {
                let how = r.object.as_ref().map_or(String::new(), |o| {
                    format!(
                        " with the {} ({} bytes{})",
                        o.kind.replace('_', " "),
                        o.length,
                        o.base_version
                            .as_ref()
                            .map_or(String::new(), |b| format!(" from {b}"))
                    )
                });
                println!(
                    "updated to {to}{how}; {} bytes downloaded in {:.1} s; every check passed",
                    r.bytes_downloaded,
                    r.durations_ms.total as f64 / 1000.0
                );
            }
            Outcome::UpToDate => println!("up to date: the device runs {to}"),
            Outcome::WaitingForApproval => println!(
                "waiting for site approval: the mirror serves the new release only once the site approves it; nothing installed"
            ),
            Outcome::Refused => println!(
                "refused: {}",
                r.reason.as_deref().unwrap_or("a check failed")
            ),
            Outcome::Failed => {
                println!("failed: {}", r.reason.as_deref().unwrap_or("unknown error"))
            }
        }
    }
}
