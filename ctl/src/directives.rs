//! `#GANTRY` and `#SBATCH` directive lines at the top of a batch script.
//!
//! Like sbatch: directives start at the beginning of a line, come after the shebang and
//! before the first line that is neither blank nor a comment; everything after that is the
//! script's own business. Both prefixes take the same options as `gantry submit`, in the
//! forms `--flag=value`, `--flag value`, `-f value` and `-fvalue`. Pure: text in, values out.

use thiserror::Error;

/// The prefixes that mark a directive line; `#SBATCH` so that Slurm scripts keep working.
pub const PREFIXES: [&str; 2] = ["#GANTRY", "#SBATCH"];

/// The `gantry submit` options a directive may set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Flag {
    JobName,
    GpusPerNode,
    CpusPerNode,
    Mem,
    Nodes,
    Time,
    Account,
    Output,
    Error,
    OpenMode,
    Chdir,
    Parsable,
    Alternative,
    Qos,
    Deadline,
    Partition,
    Constraint,
    Dependency,
    Checkpoint,
    CheckpointInterval,
    Signal,
    Requeue,
    NoRequeue,
    RequeueOnTimeout,
    Reservation,
}

impl Flag {
    pub const ALL: [Flag; 25] = [
        Flag::JobName,
        Flag::GpusPerNode,
        Flag::CpusPerNode,
        Flag::Mem,
        Flag::Nodes,
        Flag::Time,
        Flag::Account,
        Flag::Output,
        Flag::Error,
        Flag::OpenMode,
        Flag::Chdir,
        Flag::Parsable,
        Flag::Alternative,
        Flag::Qos,
        Flag::Deadline,
        Flag::Partition,
        Flag::Constraint,
        Flag::Dependency,
        Flag::Checkpoint,
        Flag::CheckpointInterval,
        Flag::Signal,
        Flag::Requeue,
        Flag::NoRequeue,
        Flag::RequeueOnTimeout,
        Flag::Reservation,
    ];

    pub fn short(self) -> Option<char> {
        match self {
            Flag::JobName => Some('J'),
            Flag::GpusPerNode => Some('G'),
            Flag::CpusPerNode => Some('c'),
            Flag::Nodes => Some('N'),
            Flag::Time => Some('t'),
            Flag::Account => Some('A'),
            Flag::Output => Some('o'),
            Flag::Error => Some('e'),
            Flag::Chdir => Some('D'),
            Flag::Qos => Some('q'),
            Flag::Partition => Some('p'),
            Flag::Constraint => Some('C'),
            Flag::Dependency => Some('d'),
            Flag::Mem
            | Flag::Parsable
            | Flag::Alternative
            | Flag::Deadline
            | Flag::Checkpoint
            | Flag::CheckpointInterval
            | Flag::OpenMode
            | Flag::Signal
            | Flag::Requeue
            | Flag::NoRequeue
            | Flag::RequeueOnTimeout
            | Flag::Reservation => None,
        }
    }

    pub fn long(self) -> &'static str {
        match self {
            Flag::JobName => "job-name",
            Flag::GpusPerNode => "gpus-per-node",
            Flag::CpusPerNode => "cpus-per-node",
            Flag::Mem => "mem",
            Flag::Nodes => "nodes",
            Flag::Time => "time",
            Flag::Account => "account",
            Flag::Output => "output",
            Flag::Error => "error",
            Flag::OpenMode => "open-mode",
            Flag::Chdir => "chdir",
            Flag::Parsable => "parsable",
            Flag::Alternative => "alt",
            Flag::Qos => "qos",
            Flag::Deadline => "deadline",
            Flag::Partition => "partition",
            Flag::Constraint => "constraint",
            Flag::Dependency => "dependency",
            Flag::Checkpoint => "checkpoint",
            Flag::CheckpointInterval => "checkpoint-interval",
            Flag::Signal => "signal",
            Flag::Requeue => "requeue",
            Flag::NoRequeue => "no-requeue",
            Flag::RequeueOnTimeout => "requeue-on-timeout",
            Flag::Reservation => "reservation",
        }
    }

    /// Other long names accepted for the same option. `--cpus-per-task` is Slurm's name;
    /// Gantry runs one task per node, so the two mean the same.
    pub fn aliases(self) -> &'static [&'static str] {
        match self {
            Flag::CpusPerNode => &["cpus-per-task"],
            Flag::Partition => &["pool"],
            _ => &[],
        }
    }

    pub fn takes_value(self) -> bool {
        !matches!(
            self,
            Flag::Parsable | Flag::Requeue | Flag::NoRequeue | Flag::RequeueOnTimeout
        )
    }

    /// How messages name the option: `-c/--cpus-per-node`, or `--mem`.
    pub fn label(self) -> String {
        match self.short() {
            Some(short) => format!("-{short}/--{}", self.long()),
            None => format!("--{}", self.long()),
        }
    }

    fn from_long(name: &str) -> Option<Flag> {
        Flag::ALL
            .into_iter()
            .find(|f| f.long() == name || f.aliases().contains(&name))
    }

    fn from_short(c: char) -> Option<Flag> {
        Flag::ALL.into_iter().find(|f| f.short() == Some(c))
    }
}

/// One option set by a directive line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub flag: Flag,
    /// `None` only for options that take no value (`--parsable`).
    pub value: Option<String>,
    /// 1-based line number in the script.
    pub line: usize,
}

/// The directives of one script, in file order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Directives {
    pub items: Vec<Directive>,
}

impl Directives {
    /// The value of the last directive that set `flag` (a later line overrides an earlier
    /// one, as with repeated options), with its line number.
    /// Every value given for a repeatable option, in file order, with its line.
    pub fn all(&self, flag: Flag) -> Vec<(&str, usize)> {
        self.items
            .iter()
            .filter(|d| d.flag == flag)
            .map(|d| (d.value.as_deref().unwrap_or(""), d.line))
            .collect()
    }

    pub fn last(&self, flag: Flag) -> Option<(&str, usize)> {
        self.items
            .iter()
            .rev()
            .find(|d| d.flag == flag)
            .map(|d| (d.value.as_deref().unwrap_or(""), d.line))
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("{file}:{line}: {problem}")]
pub struct DirectiveError {
    pub file: String,
    pub line: usize,
    pub problem: Problem,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum Problem {
    #[error("unknown option {0:?} in a {1} directive (known: {known})", known = known_options())]
    UnknownOption(String, &'static str),
    #[error("{0} needs a value")]
    MissingValue(String),
    #[error("{0} takes no value")]
    UnexpectedValue(String),
    #[error("expected an option such as --time=1:00:00, found {0:?}")]
    NotAnOption(String),
    #[error("unterminated quote")]
    UnterminatedQuote,
}

fn known_options() -> String {
    Flag::ALL
        .iter()
        .map(|f| f.label())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads the directives of a script. `file` names the script in error messages.
pub fn parse(file: &str, text: &str) -> Result<Directives, DirectiveError> {
    let mut items = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if number == 1 && line.starts_with("#!") {
            continue;
        }
        let trimmed = line.trim_start();
        if trimmed.is_empty() {
            continue;
        }
        if !trimmed.starts_with('#') {
            // The first command ends the directive block, as in sbatch.
            break;
        }
        let Some((prefix, rest)) = directive_body(line) else {
            continue;
        };
        let fail = |problem| DirectiveError {
            file: file.to_string(),
            line: number,
            problem,
        };
        let words = split_words(rest).map_err(fail)?;
        parse_options(prefix, &words, number, &mut items).map_err(fail)?;
    }
    Ok(Directives { items })
}

/// The prefix and the text after it, if `line` is a directive. The prefix must start the
/// line and be followed by a blank or the end: `#SBATCHX` and ` #SBATCH` are comments, as
/// in sbatch.
fn directive_body(line: &str) -> Option<(&'static str, &str)> {
    PREFIXES.into_iter().find_map(|prefix| {
        let rest = line.strip_prefix(prefix)?;
        (rest.is_empty() || rest.starts_with(char::is_whitespace)).then_some((prefix, rest))
    })
}

fn parse_options(
    prefix: &'static str,
    words: &[String],
    line: usize,
    items: &mut Vec<Directive>,
) -> Result<(), Problem> {
    let mut words = words.iter();
    while let Some(word) = words.next() {
        let (flag, inline, shown) = if let Some(long) = word.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((name, value)) => (name, Some(value.to_string())),
                None => (long, None),
            };
            let flag = Flag::from_long(name)
                .ok_or_else(|| Problem::UnknownOption(format!("--{name}"), prefix))?;
            (flag, inline, format!("--{name}"))
        } else if let Some(short) = word.strip_prefix('-').filter(|s| !s.is_empty()) {
            let mut chars = short.chars();
            let c = chars.next().unwrap_or_default();
            let flag = Flag::from_short(c)
                .ok_or_else(|| Problem::UnknownOption(format!("-{c}"), prefix))?;
            // `-c4` and `-c=4` both mean 4, as on the command line.
            let rest = chars.as_str();
            let rest = rest.strip_prefix('=').unwrap_or(rest);
            let inline = (!rest.is_empty()).then(|| rest.to_string());
            (flag, inline, format!("-{c}"))
        } else {
            return Err(Problem::NotAnOption(word.clone()));
        };
        let value = if flag.takes_value() {
            match inline {
                Some(value) => Some(value),
                None => Some(words.next().cloned().ok_or(Problem::MissingValue(shown))?),
            }
        } else if inline.is_some() {
            return Err(Problem::UnexpectedValue(shown));
        } else {
            None
        };
        items.push(Directive { flag, value, line });
    }
    Ok(())
}

/// Splits a directive into words the way a shell would for simple cases: blanks separate,
/// single quotes are literal, double quotes and backslashes escape, and an unquoted `#`
/// starting a word begins a trailing comment.
fn split_words(text: &str) -> Result<Vec<String>, Problem> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            '#' if !in_word => break,
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => current.push(c),
                        None => return Err(Problem::UnterminatedQuote),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => current.push(c),
                            Some(c) => {
                                current.push('\\');
                                current.push(c);
                            }
                            None => return Err(Problem::UnterminatedQuote),
                        },
                        Some(c) => current.push(c),
                        None => return Err(Problem::UnterminatedQuote),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    current.push(c);
                }
            }
            c => {
                in_word = true;
                current.push(c);
            }
        }
    }
    if in_word {
        words.push(current);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(text: &str) -> Vec<(Flag, Option<String>, usize)> {
        parse("job.sh", text)
            .unwrap()
            .items
            .into_iter()
            .map(|d| (d.flag, d.value, d.line))
            .collect()
    }

    fn v(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    #[test]
    fn long_short_equals_and_space_forms() {
        let script = "#!/bin/bash\n\
                      #GANTRY --job-name=train\n\
                      #GANTRY --gpus-per-node 4\n\
                      #GANTRY -c 8\n\
                      #GANTRY -N2\n\
                      #GANTRY -t=1:00:00\n\
                      #SBATCH --mem=16G --account research\n\
                      #SBATCH --parsable\n\
                      #SBATCH --cpus-per-task=3\n\
                      python train.py\n";
        assert_eq!(
            values(script),
            vec![
                (Flag::JobName, v("train"), 2),
                (Flag::GpusPerNode, v("4"), 3),
                (Flag::CpusPerNode, v("8"), 4),
                (Flag::Nodes, v("2"), 5),
                (Flag::Time, v("1:00:00"), 6),
                (Flag::Mem, v("16G"), 7),
                (Flag::Account, v("research"), 7),
                (Flag::Parsable, None, 8),
                (Flag::CpusPerNode, v("3"), 9),
            ]
        );
    }

    #[test]
    fn later_directives_override_earlier_ones() {
        let d = parse("job.sh", "#!/bin/sh\n#GANTRY -c 2\n#SBATCH -c 6\necho\n").unwrap();
        assert_eq!(d.last(Flag::CpusPerNode), Some(("6", 3)));
        assert_eq!(d.last(Flag::Mem), None);
    }

    #[test]
    fn stops_at_the_first_command_line() {
        let script = "#!/bin/sh\n\
                      # a comment\n\
                      \n\
                      #GANTRY -G 1\n\
                      echo start\n\
                      #GANTRY -G 8\n\
                      #GANTRY --bogus\n";
        assert_eq!(values(script), vec![(Flag::GpusPerNode, v("1"), 4)]);
    }

    #[test]
    fn comments_and_lookalikes_are_not_directives() {
        let script = "#!/bin/sh\n\
                      #SBATCHX --bogus\n\
                      ##SBATCH --bogus\n\
                      \x20#SBATCH --bogus\n\
                      #sbatch --bogus\n\
                      #GANTRY -J 'my job' # trailing comment --bogus\n\
                      #GANTRY -o \"out dir/%j.log\"\n\
                      true\n";
        assert_eq!(
            values(script),
            vec![
                (Flag::JobName, v("my job"), 6),
                (Flag::Output, v("out dir/%j.log"), 7)
            ]
        );
    }

    #[test]
    fn a_shebang_is_only_skipped_on_the_first_line() {
        // Without a shebang the first line is an ordinary comment or directive.
        assert_eq!(
            values("#GANTRY -c 2\ntrue\n"),
            vec![(Flag::CpusPerNode, v("2"), 1)]
        );
        assert_eq!(
            values("\r\n#GANTRY -c 2\r\ntrue\r\n"),
            vec![(Flag::CpusPerNode, v("2"), 2)]
        );
    }

    #[test]
    fn unknown_options_name_the_file_and_line() {
        let err = parse(
            "run.sh",
            "#!/bin/sh\n#GANTRY -c 2\n#SBATCH --gres=gpu:2\nx\n",
        )
        .unwrap_err();
        assert_eq!(err.file, "run.sh");
        assert_eq!(err.line, 3);
        assert_eq!(
            err.problem,
            Problem::UnknownOption("--gres".into(), "#SBATCH")
        );
        let text = err.to_string();
        assert!(
            text.starts_with("run.sh:3: unknown option \"--gres\""),
            "{text}"
        );
        assert!(text.contains("-c/--cpus-per-node"), "{text}");

        let err = parse("run.sh", "#GANTRY -x 1\n").unwrap_err();
        assert_eq!(
            (err.line, err.problem),
            (1, Problem::UnknownOption("-x".into(), "#GANTRY"))
        );
    }

    #[test]
    fn malformed_directives_are_errors() {
        let problem = |text: &str| parse("j", text).unwrap_err().problem;
        assert_eq!(
            problem("#GANTRY --time\n"),
            Problem::MissingValue("--time".into())
        );
        assert_eq!(problem("#GANTRY -t\n"), Problem::MissingValue("-t".into()));
        assert_eq!(
            problem("#GANTRY --parsable=yes\n"),
            Problem::UnexpectedValue("--parsable".into())
        );
        assert_eq!(problem("#GANTRY 4\n"), Problem::NotAnOption("4".into()));
        assert_eq!(problem("#GANTRY -J 'oops\n"), Problem::UnterminatedQuote);
        assert_eq!(problem("#GANTRY -\n"), Problem::NotAnOption("-".into()));
    }

    #[test]
    fn a_negative_value_is_taken_as_a_value() {
        // The value check (not the parser) explains why -1 CPUs is wrong.
        assert_eq!(
            values("#GANTRY -c -1\n"),
            vec![(Flag::CpusPerNode, v("-1"), 1)]
        );
    }

    #[test]
    fn labels() {
        assert_eq!(Flag::CpusPerNode.label(), "-c/--cpus-per-node");
        assert_eq!(Flag::Mem.label(), "--mem");
    }
}
