//! The `mailroom` command: the whole pipeline locally, on mail files, with embedded storage.

mod assist;
mod console;
mod digest;
mod dlq;
mod input;
mod learn;
mod operate;
mod output;
#[cfg(feature = "aws")]
mod push;
mod retention;
mod run;
mod senders;
mod subject;
mod target;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use mailroom_core::Config;
use mailroom_core::embedded::disk::DiskState;
use mailroom_core::embedded::files::{DirObjects, DirQueues, InProcess, Outbox};
use mailroom_core::pipeline::{Engine, Ports};

#[derive(Parser)]
#[command(
    name = "mailroom",
    version,
    about = "Inbound-email pipeline: filter, classify, route and respond"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Jsonl,
}

#[derive(Subcommand)]
enum Command {
    /// Run all four stages over .eml files, directories, mbox files and Maildir folders.
    Run {
        /// The TOML config (default: built-in defaults, no rules).
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        /// Where rate limits, once-only effects, the audit trail, stored and quarantined
        /// mail and delivery queues are kept.
        #[arg(long, default_value = "mailroom-out/state")]
        state: PathBuf,
        /// Where every message the pipeline would send is written as an .eml file.
        #[arg(long, default_value = "mailroom-out/outbox")]
        outbox: PathBuf,
        /// Also write the run's figures (the counts of the summary) to this file as JSON.
        #[arg(long)]
        metrics: Option<PathBuf>,
        /// Messages run at once, each on a core of its own (default: every core). The
        /// output keeps the input order.
        #[arg(long)]
        jobs: Option<usize>,
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
    },
    /// Write a config for a stack: the bundled example (examples/mailroom.toml, every option
    /// commented) with `[mailroom] domains` and `from_address` set to the stack's
    /// DomainName and FromAddress.
    Init {
        /// The stack's DomainName: the domain mailroom receives mail for.
        #[arg(long)]
        domain: String,
        /// The stack's FromAddress: the SES-verified address at DOMAIN that forwards and
        /// auto-replies come from.
        #[arg(long)]
        from: String,
        /// Where to write it.
        #[arg(long, default_value = "mailroom.toml")]
        output: PathBuf,
        /// Replace OUTPUT when it exists.
        #[arg(long)]
        force: bool,
    },
    /// Validate a config file: exit 1 with the line and column of the first problem.
    Check { file: PathBuf },
    /// Quarantined mail: list it.
    Quarantine {
        #[command(subcommand)]
        command: QuarantineCommand,
    },
    /// One message: its headers, text, attachments (and what the attachment policy said)
    /// and every stage's audit record.
    Show {
        id: String,
        #[command(flatten)]
        target: target::Target,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Add a sender (address, or @domain) to the config's allow_senders: its mail skips the
    /// spam score and the authentication policies (never the virus verdict or attachment
    /// policy). The file keeps its comments; it must still pass `mailroom check`.
    Allow {
        sender: String,
        #[command(flatten)]
        target: target::Target,
    },
    /// Add a sender (address, or @domain) to the config's block_senders: its mail is
    /// rejected.
    Block {
        sender: String,
        #[command(flatten)]
        target: target::Target,
    },
    /// A web console over the same functions: overview, quarantine, search, message view,
    /// release, delete, allow/block and (on a stack) the dead-letter queues. It prints its
    /// URL, which carries a per-run token; without the token nothing is served.
    Console {
        #[command(flatten)]
        target: target::Target,
        /// The address to listen on (loopback unless you mean otherwise: beyond it the
        /// token and the pages travel in plain HTTP). Browsers must reach it by that address
        /// or a --host name; 0.0.0.0 and :: need --host.
        #[arg(long, default_value = "127.0.0.1")]
        bind: std::net::IpAddr,
        /// A name (or address) browsers reach the console by, accepted as its Host besides
        /// the bind address; the printed URL uses the first. Repeatable.
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// The port (0: any free one).
        #[arg(long, default_value_t = 8025)]
        port: u16,
        /// Who acts, for the audit trail (default: $MAILROOM_OPERATOR, else $USER).
        #[arg(long)]
        by: Option<String>,
    },
    /// Erase everything kept about one data subject: each message whose sender, recipient,
    /// Cc or Reply-To is ADDRESS loses its copies, records, index entries and audit; one
    /// erasure record with a keyed hash of the address stays. It names the config's sender
    /// lists that hold the address.
    Erase {
        #[arg(long)]
        subject: String,
        /// Print what would go, and remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also take the address off [filter] allow_senders and block_senders: of --config
        /// FILE (pushed too with --stack), else of the stack's own config, whose earlier
        /// versions holding the address are deleted.
        #[arg(long)]
        from_config: bool,
        /// Who erases, for the erasure record (default: $MAILROOM_OPERATOR, else $USER).
        #[arg(long)]
        by: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        #[command(flatten)]
        target: target::Target,
    },
    /// Mail each recipient a digest of their quarantined mail from the last [digest] period
    /// (into the outbox), with signed links to release it that `mailroom console`
    /// answers. A second run in the same period sends nothing again.
    Digest {
        /// Where the links point: the console's /link (start it with this port).
        #[arg(long, default_value = digest::DEFAULT_LINK_BASE)]
        link_base: String,
        /// As if it were this date, time or age ago.
        #[arg(long)]
        as_of: Option<String>,
        #[command(flatten)]
        target: target::Target,
    },
    /// Apply the config's [retention] to the embedded store: quarantined and stored copies,
    /// message records and erasure records past their time go (`mailroom run` does this
    /// at its end).
    Gc {
        /// As if it were this date, time or age ago (see what a later run would remove).
        #[arg(long)]
        as_of: Option<String>,
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        target: target::Target,
    },
    /// Write one data subject's mail (each message as .eml, its summary and audit as JSON)
    /// into a zip file, for an access request.
    Export {
        #[arg(long)]
        subject: String,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        target: target::Target,
    },
    /// A deployed stack's dead-letter queues: list them, or move messages back.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Say whether a message is spam or not, for the spam model to learn from
    /// (`mailroom train --feedback`). A release already counts as "not spam".
    Mark {
        id: String,
        /// spam, or ham (not spam).
        #[arg(value_parser = ["spam", "ham", "not-spam"])]
        label: String,
        #[command(flatten)]
        args: operate::ActionArgs,
    },
    /// Search the messages a run processed, newest first.
    Search {
        #[command(flatten)]
        store: operate::StoreArgs,
        #[command(flatten)]
        filters: operate::Filters,
        #[command(flatten)]
        more: operate::SearchFilters,
    },
    /// Validate a config and the models it names, and upload them to the bucket the
    /// functions read them from (models relative to the config key, the config last).
    #[cfg(feature = "aws")]
    PushConfig {
        file: PathBuf,
        #[arg(long)]
        bucket: String,
        #[arg(long, default_value = "config/mailroom.toml")]
        key: String,
    },
    /// Train a text classifier from DIR/<label>/* (.eml files or an mbox per folder); the
    /// folder names are the labels, and ham/ + spam/ gives a spam model.
    Train {
        /// Where to write the model file.
        #[arg(long)]
        out: PathBuf,
        /// The model's name in results (`model:NAME`); default: the file name.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        args: learn::LearnArgs,
        #[command(flatten)]
        feedback: learn::FeedbackArgs,
        dir: PathBuf,
    },
    /// Measure a model on DIR/<label>/*, or cross-validate learners on it with --folds K.
    /// Prints a table on stderr and JSON on stdout.
    Eval {
        /// A trained model to measure on DIR.
        #[arg(long)]
        model: Option<PathBuf>,
        /// Stratified k-fold cross-validation: train on k-1 folds, test on the held-out one.
        #[arg(long)]
        folds: Option<usize>,
        /// Measure the language model of the config's [assist] table (with --config) on DIR:
        /// its category for each message against its folder.
        #[arg(long, requires = "config")]
        assist: bool,
        /// The config whose [assist] model --assist measures.
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        args: learn::LearnArgs,
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum QuarantineCommand {
    /// Let a quarantined message go on as accepted mail: its forwards, deliveries and
    /// auto-reply, once. Virus mail and blocked executables are never released; mail held
    /// for a macro document only with --force-macro.
    Release {
        id: String,
        /// Release mail held for a document with macros (MACRO_DOCUMENT), which digest
        /// links never release; the release's audit record names the force (force-macro).
        #[arg(long)]
        force_macro: bool,
        #[command(flatten)]
        args: operate::ActionArgs,
    },
    /// Delete a message's quarantined copy and take it off the list.
    Delete {
        id: String,
        #[command(flatten)]
        args: operate::ActionArgs,
    },
    /// One row per quarantined message: id, date, sender, recipients, subject, score and
    /// reasons, newest first.
    List {
        #[command(flatten)]
        store: operate::StoreArgs,
        #[command(flatten)]
        filters: operate::Filters,
        /// A piece of a reason tag, case-insensitive (SPAM, VIRUS, DMARC).
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Each message in the stages' dead-letter queues, with the reason its last attempt
    /// failed (from the audit trail). They stay in the queue.
    List {
        #[command(flatten)]
        target: target::Target,
        /// One stage's DLQ: filter (inbound), classify, route or respond.
        #[arg(long)]
        queue: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Move messages back to the queue they came from: those named (SQS message id or
    /// mail id), or all with --all.
    Redrive {
        #[command(flatten)]
        target: target::Target,
        #[arg(long)]
        queue: Option<String>,
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        ids: Vec<String>,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Quarantine {
            command:
                QuarantineCommand::List {
                    store,
                    filters,
                    reason,
                },
        } => exit(operate::quarantine_list(
            &store,
            &filters,
            reason.as_deref(),
        )),
        Command::Quarantine {
            command:
                QuarantineCommand::Release {
                    id,
                    force_macro,
                    args,
                },
        } => exit(operate::release(&args, &id, force_macro)),
        Command::Quarantine {
            command: QuarantineCommand::Delete { id, args },
        } => exit(operate::delete(&args, &id)),
        Command::Mark { id, label, args } => exit(operate::mark(&args, &id, &label)),
        Command::Allow { sender, target } => exit(senders::command(
            &target,
            mailroom_core::config::SenderList::Allow,
            &sender,
        )),
        Command::Block { sender, target } => exit(senders::command(
            &target,
            mailroom_core::config::SenderList::Block,
            &sender,
        )),
        Command::Console {
            target,
            bind,
            hosts,
            port,
            by,
        } => exit(console::serve(&target, bind, &hosts, port, by)),
        Command::Erase {
            subject,
            dry_run,
            from_config,
            by,
            format,
            target,
        } => exit(subject::erase(
            &target,
            &subject,
            &operate::operator_name(&by),
            subject::EraseOptions {
                dry_run,
                from_config,
            },
            format,
        )),
        Command::Digest {
            link_base,
            as_of,
            target,
        } => exit(digest::command(&target, &link_base, as_of.as_deref())),
        Command::Gc {
            as_of,
            dry_run,
            target,
        } => exit(retention::gc(&target, as_of.as_deref(), dry_run)),
        Command::Export {
            subject,
            out,
            target,
        } => exit(subject::export(&target, &subject, &out)),
        Command::Dlq { command } => exit(match command {
            DlqCommand::List {
                target,
                queue,
                format,
            } => dlq::list(&target, queue.as_deref(), format),
            DlqCommand::Redrive {
                target,
                queue,
                all,
                ids,
            } => dlq::redrive(&target, queue.as_deref(), all, &ids),
        }),
        Command::Search {
            store,
            filters,
            more,
        } => exit(operate::search(&store, &filters, &more)),
        Command::Show { id, target, format } => exit(operate::show(&target, format, &id)),
        Command::Init {
            domain,
            from,
            output,
            force,
        } => exit(init(&domain, &from, &output, force)),
        Command::Check { file } => match load_checked(&file) {
            Ok(c) => {
                for w in c.warnings() {
                    eprintln!("warning: {}: {w}", file.display());
                }
                println!(
                    "{}: ok ({} route rules, {} classify rules, {} templates)",
                    file.display(),
                    c.routes.len(),
                    c.classify.rules.len(),
                    c.respond.templates.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        #[cfg(feature = "aws")]
        Command::PushConfig { file, bucket, key } => {
            match push::push_config(&file, &bucket, &key) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run {
            config,
            format,
            state,
            outbox,
            metrics,
            jobs,
            inputs,
        } => match run::run(&run::RunArgs {
            config: config.as_deref(),
            format,
            state_dir: &state,
            outbox: &outbox,
            metrics: metrics.as_deref(),
            jobs: jobs.unwrap_or_else(run::cores),
            inputs: &inputs,
        }) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Train {
            out,
            name,
            args,
            feedback,
            dir,
        } => exit(learn::train(&out, name.as_deref(), &dir, &args, &feedback)),
        Command::Eval {
            model,
            folds,
            assist,
            config,
            args,
            dir,
        } => exit(match (assist, config) {
            (true, Some(config)) => assist::eval(&config, &dir),
            (false, Some(_)) => Err(anyhow::anyhow!("--config goes with --assist")),
            _ => learn::eval(model.as_deref(), folds, &dir, &args),
        }),
    }
}

/// The example config every option of which is documented, as `mailroom init` starts.
const EXAMPLE_CONFIG: &str = include_str!("../../examples/mailroom.toml");

/// `mailroom init`: the example made for one stack, written only where nothing is (unless
/// `force`), through a file beside it so that a crash leaves no half-written config.
fn init(domain: &str, from: &str, output: &Path, force: bool) -> Result<()> {
    let origin = output.display().to_string();
    let text = mailroom_core::config::for_domain(EXAMPLE_CONFIG, &origin, domain, from)?;
    if output.exists() && !force {
        anyhow::bail!("{origin} exists: pass --force to replace it, or --output another file");
    }
    let tmp = output.with_extension("toml.init");
    std::fs::write(&tmp, &text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, output).with_context(|| format!("writing {origin}"))?;
    println!(
        "wrote {origin} for {}: check it with `mailroom check {origin}`, then upload it with \
         `mailroom push-config {origin} --bucket <BucketName output>`",
        domain.trim().to_ascii_lowercase()
    );
    Ok(())
}

fn exit(r: Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A config and the models it names, all loaded, so that `check` validates both.
fn load_checked(file: &Path) -> Result<Config, String> {
    let config = Config::load(file).map_err(|e| e.to_string())?;
    mailroom_learn::load_for_config(&config, config_dir(file))
        .map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(config)
}

/// The directory model paths in a config are relative to.
fn config_dir(file: &Path) -> &Path {
    file.parent().unwrap_or(Path::new(""))
}

/// A config file and the models it names.
pub(crate) fn load_config(
    path: &Path,
) -> Result<(
    Config,
    mailroom_core::filter::Filter,
    mailroom_core::classify::Classifier,
)> {
    let config = Config::load(path)?;
    let (filter, classifier) = mailroom_learn::load_for_config(&config, config_dir(path))
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok((config, filter, classifier))
}

/// The engine of a local run: the config (and its models) or the defaults, over the
/// embedded state in `state_dir` and the outbox folder.
pub(crate) fn local_engine(
    config: Option<&Path>,
    state_dir: &Path,
    outbox: &Path,
) -> Result<(Engine, Arc<DiskState>)> {
    let (config, filter, classifier) = match config {
        Some(path) => load_config(path)?,
        None => (
            Config::default_config(),
            Default::default(),
            Default::default(),
        ),
    };
    let state = Arc::new(DiskState::open(state_dir).map_err(anyhow::Error::msg)?);
    let ports = Ports {
        // `run` hands the bytes over itself; the operator commands read them back.
        raw: Arc::new(input::InputFiles),
        objects: Arc::new(DirObjects {
            root: state_dir.join("objects"),
        }),
        state: state.clone(),
        audit: state.clone(),
        index: state.clone(),
        feedback: state.clone(),
        allow_list: state.clone(),
        publisher: Arc::new(InProcess),
        queues: Arc::new(DirQueues {
            root: state_dir.join("queues"),
        }),
        sender: Arc::new(Outbox {
            dir: outbox.to_path_buf(),
        }),
        assistant: assist::for_config(&config),
    };
    Ok((
        Engine::new(Arc::new(config), filter, classifier, ports),
        state,
    ))
}
