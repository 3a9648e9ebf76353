//! Checks a recorded fault-suite history offline (security-catalog.md §4,
//! docs/faults.md): `cargo run --example check_history -- FILE.jsonl
//! [--allow CODE]... [--leeway S] [--max-lifetime S] [--no-writes]`.
//!
//! FILE is a JSON-lines history as the fault suite keeps it
//! (`KEYBOUND_FAULTS_KEEP=DIR cargo nextest run --all-features --test it
//! faults::`). The checker is the suite's own (tests/it/common/history.rs):
//! I1 no proof accepted twice, I2 no token accepted past exp + leeway, I3
//! every acknowledged write read back and audited, I5 every issued token
//! at most 300 s for one audience, I6 no valid request refused except with
//! an allowed code. Prints the figures and the violations; exits 1 when
//! there is a violation, 2 on a usage or parse error.

#[path = "../tests/it/common/history.rs"]
mod history;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut file = None;
    let mut model = history::Model::default();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next().unwrap_or_else(|| {
                eprintln!("{name} needs a value");
                std::process::exit(2)
            })
        };
        let number = |name: &str, v: String| {
            v.parse().unwrap_or_else(|_| {
                eprintln!("{name}: not a number: {v}");
                std::process::exit(2)
            })
        };
        match arg.as_str() {
            "--allow" => model.allowed_refusals.push(value("--allow")),
            "--leeway" => model.leeway = number("--leeway", value("--leeway")),
            "--max-lifetime" => model.max_lifetime = number("--max-lifetime", value("--max-lifetime")),
            "--no-writes" => model.check_writes = false,
            "-h" | "--help" => {
                println!(
                    "usage: check_history FILE.jsonl [--allow CODE]... [--leeway S] [--max-lifetime S] [--no-writes]"
                );
                return;
            }
            _ if file.is_none() => file = Some(arg),
            _ => {
                eprintln!("unexpected argument {arg}");
                std::process::exit(2)
            }
        }
    }
    let Some(file) = file else {
        eprintln!("usage: check_history FILE.jsonl [--allow CODE]...");
        std::process::exit(2)
    };
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        eprintln!("{file}: {e}");
        std::process::exit(2)
    });
    let ops = history::parse_json_lines(&text).unwrap_or_else(|e| {
        eprintln!("{file}: {e}");
        std::process::exit(2)
    });
    let report = history::check(&ops, &model);
    print!("{}", report.summary());
    if !report.violations.is_empty() {
        eprintln!("{} violation(s)", report.violations.len());
        std::process::exit(1);
    }
}
