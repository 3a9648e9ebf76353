//! The `keybound` command line tool. It belongs to the binary, not to the
//! library's API, and uses only what the library exports; `src/main.rs`
//! calls [`main`](crate::cli::main). Each subcommand lives in its own module
//! with a clap `Args` struct, its help texts and a `run` function; adding one
//! means adding the module, a variant of the `Command` enum and one match
//! arm in `Command::run`.
//!
//! Every failure ends as one line on stderr, `error: <code>: <message>`, and a
//! non-zero exit status: 1 for a failed operation (or an invalid signature),
//! 2 for a usage error or input that cannot be decoded at all. Codes are the
//! library's [`Code`](crate::Code)s; the few failures that have no library
//! code use the `cli.*` codes below.

mod admin_cmds;
mod client_cmds;
mod demo;
mod demo_federation;
mod demo_workflow;
mod gateway_cmd;
mod input;
mod inspect;
mod keygen;
mod man;
mod policy_cmds;
mod render;
mod server_cmds;
mod session;
mod settings;
mod status;
mod token_cache;
mod verify_cmd;

use std::borrow::Cow;
use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Code of command line usage errors (unknown flags, bad argument values).
pub const CODE_USAGE: &str = "cli.usage";
/// Code of input or output failures that are not about key files.
pub const CODE_IO: &str = "cli.io";
/// Code of a bug: the tool failed in a way it should never fail.
pub const CODE_INTERNAL: &str = "cli.internal";

/// Exit status of a failed operation, or of an invalid signature.
pub(crate) const EXIT_FAILURE: u8 = 1;
/// Exit status of a usage error or undecodable input.
pub(crate) const EXIT_USAGE: u8 = 2;

const ABOUT: &str = "keybound: holder-of-key tokens (CWT/COSE) bound to a client key, with a signed proof per request.";

const LONG_ABOUT: &str = "\
keybound: holder-of-key tokens (CWT/COSE) bound to a client key, with a signed proof per request.

An issuer hands out small CWTs that name one service and carry the client's public key; every request \
carries a fresh COSE proof signed with that key. This tool runs the issuer (serve, admin), is a client \
(login, status, token, request, headers, logout), checks tokens and proofs offline (verify, inspect), \
creates keys (keygen), and shows the whole story in one command (demo).

The client keeps one session per profile (--profile NAME or KEYBOUND_PROFILE; without one, the default \
profile): an admin and a user, or one user at two issuers, stay logged in side by side.

Errors are printed as one line, `error: <code>: <message>`. Exit status: 0 success, 1 failure \
(or an invalid signature), 2 usage error or undecodable input.";

const EXAMPLES: &str = "\
Examples:
  keybound demo
  keybound serve --data-dir ./keybound-data
  keybound login --issuer http://127.0.0.1:8080 --user ayoung@stoughton
  keybound request https://nova.example/v2/servers --project turing
  keybound --profile admin status
  keybound inspect token.b64
  keybound <COMMAND> --help";

/// The command line: `keybound <COMMAND> [OPTIONS]`.
#[derive(Debug, Parser)]
#[command(
    name = "keybound",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = EXAMPLES,
    arg_required_else_help = true,
    // Help is laid out for 100 columns even on a wider terminal, the
    // width the examples are written (and tested) for.
    max_term_width = 100
)]
pub struct Cli {
    /// Profile to use: one session (identity at one issuer) with its key and cached tokens, kept in
    /// profiles/NAME/ of the config directory (default: the default profile, in the directory itself)
    #[arg(long, global = true, env = "KEYBOUND_PROFILE", value_name = "NAME", value_parser = session::parse_profile)]
    profile: Option<String>,
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    #[command(about = keygen::ABOUT, long_about = keygen::LONG_ABOUT, after_help = keygen::EXAMPLES)]
    Keygen(keygen::Args),
    #[command(about = inspect::ABOUT, long_about = inspect::LONG_ABOUT, after_help = inspect::EXAMPLES)]
    Inspect(inspect::Args),
    #[command(about = verify_cmd::ABOUT, long_about = verify_cmd::LONG_ABOUT, after_help = verify_cmd::EXAMPLES)]
    Verify(verify_cmd::Args),
    #[command(about = server_cmds::SERVE_ABOUT, long_about = server_cmds::SERVE_LONG, after_help = server_cmds::SERVE_EXAMPLES)]
    Serve(server_cmds::ServeArgs),
    #[command(about = admin_cmds::ADMIN_ABOUT, long_about = admin_cmds::ADMIN_LONG, after_help = admin_cmds::ADMIN_EXAMPLES)]
    Admin(admin_cmds::AdminArgs),
    #[command(about = client_cmds::LOGIN_ABOUT, long_about = client_cmds::LOGIN_LONG, after_help = client_cmds::LOGIN_EXAMPLES)]
    Login(client_cmds::LoginArgs),
    #[command(about = client_cmds::TOKEN_ABOUT, long_about = client_cmds::TOKEN_LONG, after_help = client_cmds::TOKEN_EXAMPLES)]
    Token(client_cmds::TokenArgs),
    #[command(about = status::STATUS_ABOUT, long_about = status::STATUS_LONG, after_help = status::STATUS_EXAMPLES)]
    Status(status::StatusArgs),
    #[command(about = status::LOGOUT_ABOUT, long_about = status::LOGOUT_LONG, after_help = status::LOGOUT_EXAMPLES)]
    Logout(status::LogoutArgs),
    #[command(about = client_cmds::REQUEST_ABOUT, long_about = client_cmds::REQUEST_LONG, after_help = client_cmds::REQUEST_EXAMPLES)]
    Request(client_cmds::RequestArgs),
    #[command(about = client_cmds::HEADERS_ABOUT, long_about = client_cmds::HEADERS_LONG, after_help = client_cmds::HEADERS_EXAMPLES)]
    Headers(client_cmds::HeadersArgs),
    #[command(about = client_cmds::TRUST_ABOUT, long_about = client_cmds::TRUST_LONG, after_help = client_cmds::TRUST_EXAMPLES)]
    Trust(client_cmds::TrustArgs),
    #[command(about = policy_cmds::POLICY_ABOUT, long_about = policy_cmds::POLICY_LONG, after_help = policy_cmds::POLICY_EXAMPLES)]
    Policy(policy_cmds::PolicyArgs),
    #[command(about = policy_cmds::WORKPLAN_ABOUT, long_about = policy_cmds::WORKPLAN_LONG, after_help = policy_cmds::WORKPLAN_EXAMPLES)]
    Workplan(policy_cmds::WorkplanArgs),
    #[command(about = gateway_cmd::ABOUT, long_about = gateway_cmd::LONG_ABOUT, after_help = gateway_cmd::EXAMPLES)]
    Gateway(gateway_cmd::Args),
    #[command(about = demo::ABOUT, long_about = demo::LONG_ABOUT, after_help = demo::EXAMPLES)]
    Demo(demo::Args),
    #[command(about = COMPLETIONS_ABOUT, long_about = COMPLETIONS_LONG, after_help = COMPLETIONS_EXAMPLES)]
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
    #[command(about = man::ABOUT, long_about = man::LONG_ABOUT, after_help = man::EXAMPLES)]
    Man(man::Args),
}

const COMPLETIONS_ABOUT: &str = "Print shell completions (bash, zsh, fish, elvish, powershell)";
const COMPLETIONS_LONG: &str = "Print a completion script for the given shell on stdout.";
const COMPLETIONS_EXAMPLES: &str = "\
Examples:
  keybound completions bash > /etc/bash_completion.d/keybound
  keybound completions zsh > \"${fpath[1]}/_keybound\"
  keybound completions fish > ~/.config/fish/completions/keybound.fish";

impl Command {
    fn run(self) -> Result<ExitCode, CliError> {
        match self {
            Command::Keygen(args) => keygen::run(args),
            Command::Inspect(args) => inspect::run(args),
            Command::Verify(args) => verify_cmd::run(args),
            Command::Serve(args) => server_cmds::serve(args),
            Command::Admin(args) => admin_cmds::admin(args),
            Command::Login(args) => client_cmds::login(args),
            Command::Token(args) => client_cmds::token(args),
            Command::Status(args) => status::status(args),
            Command::Logout(args) => status::logout(args),
            Command::Request(args) => client_cmds::request(args),
            Command::Headers(args) => client_cmds::headers(args),
            Command::Trust(args) => client_cmds::trust(args),
            Command::Policy(args) => policy_cmds::policy(args),
            Command::Workplan(args) => policy_cmds::workplan(args),
            Command::Gateway(args) => gateway_cmd::run(args),
            Command::Demo(args) => demo::run(args),
            Command::Completions { shell } => {
                use clap::CommandFactory;
                clap_complete::generate(shell, &mut Cli::command(), "keybound", &mut std::io::stdout());
                Ok(ExitCode::SUCCESS)
            }
            Command::Man(args) => man::run(args),
        }
    }
}

/// A failure of the tool: a stable code, a one-line message, an exit status.
#[derive(Clone, Debug)]
pub(crate) struct CliError {
    code: Cow<'static, str>,
    message: String,
    exit: u8,
}

impl CliError {
    pub(crate) fn new(code: impl Into<Cow<'static, str>>, message: impl Into<String>, exit: u8) -> Self {
        CliError {
            code: code.into(),
            message: message.into(),
            exit,
        }
    }

    /// A usage error (exit status 2).
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self::new(CODE_USAGE, message, EXIT_USAGE)
    }

    /// An I/O failure (exit status 1).
    pub(crate) fn io(message: impl Into<String>) -> Self {
        Self::new(CODE_IO, message, EXIT_FAILURE)
    }

    /// Wraps a library error with its code and another exit status.
    pub(crate) fn with_exit(e: crate::Error, exit: u8) -> Self {
        if e.code() == crate::Code::SessionKeyReplaced {
            // The issuer's own words say nothing about what to type.
            return Self::new(
                e.code().as_str(),
                "the issuer's keys were replaced since you logged in (an emergency replacement of its root \
                 secret): run `keybound login` again",
                exit,
            );
        }
        Self::new(e.code().as_str(), e.message().to_owned(), exit)
    }

    /// Prefixes the message with what was being done (`--kid: ...`).
    pub(crate) fn context(mut self, what: &str) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }

    pub(crate) fn code(&self) -> &str {
        &self.code
    }

    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    /// Prints `error: <code>: <message>` as exactly one line on stderr.
    fn report(&self) -> ExitCode {
        let message = one_line(&self.message);
        let _ = writeln!(std::io::stderr().lock(), "error: {}: {message}", self.code);
        ExitCode::from(self.exit.max(1))
    }
}

impl From<crate::Error> for CliError {
    fn from(e: crate::Error) -> Self {
        Self::with_exit(e, EXIT_FAILURE)
    }
}

/// Collapses whitespace runs (including newlines) to single spaces.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Writes `text` and a newline to stdout. A closed pipe (`keybound … | head`)
/// is not an error.
pub(crate) fn print_stdout(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::io(format!("cannot write to stdout: {e}"))),
    }
}

/// Turns a clap error into the tool's output: help and version go to stdout
/// as usual, every real error becomes one `error: cli.usage: …` line.
fn clap_failure(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(EXIT_USAGE))
        }
        _ => {
            let rendered = e.render().to_string();
            let message = rendered
                .lines()
                .map(str::trim)
                .filter(|line| {
                    !line.is_empty() && !line.starts_with("Usage:") && !line.starts_with("For more information")
                })
                .map(|line| line.strip_prefix("error:").map_or(line, str::trim))
                .collect::<Vec<_>>()
                .join(" ");
            CliError::usage(format!("{message} (see --help)")).report()
        }
    }
}

/// Runs the tool with the process arguments. The entry point of `keybound`.
pub fn main() -> ExitCode {
    // A bug must still end as one line, without a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".to_owned());
        let _ = writeln!(
            std::io::stderr().lock(),
            "error: {CODE_INTERNAL}: unexpected failure: {}",
            one_line(&what)
        );
    }));
    run(std::env::args_os())
}

/// Runs the tool with `args` (the first one is the program name).
pub fn run<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => return clap_failure(e),
    };
    session::select_profile(cli.profile.as_deref());
    match cli.command.run() {
        Ok(code) => code,
        Err(e) => e.report(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// A session from before an emergency replacement: the CLI says what to run.
    #[test]
    fn replaced_keys_say_log_in_again() {
        let e = CliError::from(crate::Error::new(crate::Code::SessionKeyReplaced, "from the issuer"));
        assert_eq!(e.code(), "session.key_replaced");
        assert!(e.message().contains("run `keybound login` again"), "{}", e.message());
    }

    /// The problems of the "Examples:" block of `help` (a rendered help
    /// text): none, or no such block, or a line that is not a whole command.
    /// A line is one when it starts with `keybound `, continues the line
    /// before (which ends in `\`), or feeds `keybound` in a pipeline or a
    /// substitution (`echo "$PW" | keybound …`), or runs it with an environment
    /// (`KEYBOUND_X=… keybound …`). A line that clap wrapped
    /// at the help width is none of these.
    pub(crate) fn example_problems(path: &str, help: &str) -> Vec<String> {
        let Some((_, block)) = help.split_once("\nExamples:\n") else {
            return vec![format!("{path}: no \"Examples:\" block")];
        };
        let lines: Vec<&str> = block.lines().take_while(|l| !l.trim().is_empty()).collect();
        if lines.is_empty() {
            return vec![format!("{path}: an empty \"Examples:\" block")];
        }
        let mut problems = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let text = line.trim();
            let continued = i > 0 && lines[i - 1].trim_end().ends_with('\\');
            let fed = ["| keybound ", "$(keybound ", "<(keybound "]
                .iter()
                .any(|p| text.contains(p));
            // `NAME=value keybound …`: one command with its environment.
            let with_env = text.split_once('=').is_some_and(|(name, _)| {
                !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            }) && text.contains(" keybound ");
            if !(text.starts_with("keybound ") || continued || fed || with_env) {
                problems.push(format!("{path}: example line is not a whole command: {text:?}"));
            }
        }
        problems
    }

    /// Walks every command at every depth (clap's own `help` subcommands
    /// aside): each has an about, each of its arguments a help text, and
    /// each leaf an "Examples:" block whose lines are whole commands in
    /// `--help` as printed at 100 columns.
    fn walk(cmd: &clap::Command, path: &mut Vec<String>, leaves: &mut usize, problems: &mut Vec<String>) {
        let name = path.join(" ");
        if cmd.get_about().is_none_or(|a| a.to_string().trim().is_empty()) {
            problems.push(format!("{name}: no about"));
        }
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            let help = arg.get_help().or(arg.get_long_help()).map(ToString::to_string);
            if help.is_none_or(|h| h.trim().is_empty()) {
                problems.push(format!("{name}: argument {id} has no help"));
            }
        }
        let subs: Vec<&clap::Command> = cmd.get_subcommands().filter(|s| s.get_name() != "help").collect();
        if subs.is_empty() {
            *leaves += 1;
            let mut argv = vec!["keybound".to_owned()];
            argv.extend(path.iter().skip(1).cloned());
            argv.push("--help".into());
            let help = match Cli::command().term_width(100).try_get_matches_from(&argv) {
                Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => e.render().to_string(),
                other => {
                    problems.push(format!("{name}: --help did not print help: {other:?}"));
                    return;
                }
            };
            problems.extend(example_problems(&name, &help));
        }
        for sub in subs {
            path.push(sub.get_name().to_owned());
            walk(sub, path, leaves, problems);
            path.pop();
        }
    }

    #[test]
    fn the_whole_command_tree_is_documented() {
        let mut cmd = Cli::command();
        cmd.build();
        let (mut leaves, mut problems) = (0, Vec::new());
        walk(&cmd, &mut vec!["keybound".into()], &mut leaves, &mut problems);
        assert!(leaves > 40, "the walk reached only {leaves} leaves");
        assert!(
            problems.is_empty(),
            "{} problems:\n{}",
            problems.len(),
            problems.join("\n")
        );
    }

    #[test]
    fn example_lines_are_whole_commands() {
        let good = "About\n\nExamples:\n  keybound a \\\n      --b c\n  echo x | keybound d\n\nmore";
        assert!(example_problems("t", good).is_empty());
        let wrapped = "About\n\nExamples:\n  keybound a --b\n  c\n";
        assert_eq!(example_problems("t", wrapped).len(), 1);
        assert_eq!(example_problems("t", "About\n\nExample:\n  keybound a\n").len(), 1);
    }
}
