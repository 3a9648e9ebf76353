//! `keybound man`: man pages, one per command at every depth, generated
//! from the same clap definitions as `--help` (clap_mangen).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::json;

use super::{CliError, print_stdout};

pub(crate) const ABOUT: &str = "Write the man pages: one per command and subcommand (keybound-login.1, …)";
pub(crate) const LONG_ABOUT: &str = "\
Write the man pages into a directory: keybound.1 and one page per subcommand at every depth, named after \
the command path (keybound-login.1, keybound-admin-user-create.1, …), in roff, from the same text as \
--help. The directory is created if missing; existing pages of the same names are replaced.

Install them for your user into ~/.local/share/man/man1 (man finds that directory when ~/.local/bin is \
on your PATH, or with MANPATH), then `man keybound-request`.";
pub(crate) const EXAMPLES: &str = "\
Examples:
  keybound man --dir ~/.local/share/man/man1
  keybound man --dir /usr/local/share/man/man1 --json";

/// `keybound man`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Directory to write the pages into (created if missing)
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Print the pages written as JSON
    #[arg(long)]
    json: bool,
}

/// Writes the page of `cmd` and of every visible subcommand below it.
fn write_pages(cmd: &clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> Result<(), CliError> {
    let name = cmd.get_display_name().unwrap_or(cmd.get_name()).to_owned();
    let path = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut page)
        .map_err(|e| CliError::io(format!("cannot render the page of {name}: {e}")))?;
    super::session::write_private(&path, &page)
        .map_err(|e| CliError::io(format!("cannot write {}: {e}", path.display())))?;
    #[cfg(unix)]
    {
        // Pages are for everyone who may read the directory.
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644));
    }
    written.push(path);
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        write_pages(sub, dir, written)?;
    }
    Ok(())
}

pub(crate) fn run(args: Args) -> Result<ExitCode, CliError> {
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| CliError::io(format!("cannot create {}: {e}", args.dir.display())))?;
    let mut cmd = <super::Cli as clap::CommandFactory>::command();
    // Names every subcommand after its path (keybound-admin-user-create).
    cmd.build();
    let mut written = Vec::new();
    write_pages(&cmd, &args.dir, &mut written)?;
    if args.json {
        let pages: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
        print_stdout(&json!({"dir": args.dir.display().to_string(), "pages": pages}).to_string())?;
    } else {
        print_stdout(&format!(
            "wrote {} man pages to {} (man keybound, man keybound-login, …)",
            written.len(),
            args.dir.display()
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}
