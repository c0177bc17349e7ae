//! The doc-test convention: which fenced blocks of a Markdown file run, what
//! they must print, and how printed output is compared. Pure text handling,
//! no processes (see `docs.rs` for the runner).

/// A fenced code block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The words of the info string (```` ```sh doctest exit=2 ```` gives
    /// `["sh", "doctest", "exit=2"]`).
    pub info: Vec<String>,
    /// The content, with the fence's own indentation removed.
    pub body: String,
    /// 1-based line of the opening fence.
    pub line: usize,
}

impl Fence {
    /// Whether the info string has this word.
    pub fn has(&self, word: &str) -> bool {
        self.info.iter().any(|w| w == word)
    }

    /// The value of a `key=value` word.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.info
            .iter()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
    }
}

/// Every fenced block of a Markdown text, in order. Fences may be indented
/// (inside list items) and use backticks or tildes.
pub fn fences(text: &str) -> Vec<Fence> {
    let mut out = Vec::new();
    let mut open: Option<(usize, char, usize, Fence)> = None;
    for (i, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim_start();
        let run = |c: char| trimmed.chars().take_while(|&x| x == c).count();
        match &mut open {
            None => {
                for c in ['`', '~'] {
                    let n = run(c);
                    if n >= 3 {
                        let info = trimmed[n..].split_whitespace().map(String::from).collect();
                        open = Some((
                            indent,
                            c,
                            n,
                            Fence {
                                info,
                                body: String::new(),
                                line: i + 1,
                            },
                        ));
                        break;
                    }
                }
            }
            Some((fence_indent, c, n, fence)) => {
                let closing = run(*c);
                if closing >= *n && trimmed[closing..].trim().is_empty() {
                    out.push(std::mem::replace(
                        fence,
                        Fence {
                            info: Vec::new(),
                            body: String::new(),
                            line: 0,
                        },
                    ));
                    open = None;
                } else {
                    let strip = indent.min(*fence_indent);
                    fence.body.push_str(&line[strip..]);
                    fence.body.push('\n');
                }
            }
        }
    }
    out
}

/// A block to run, with what it must print and how it must exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// The shell script.
    pub script: String,
    /// 1-based line of its opening fence.
    pub line: usize,
    /// The exit status it must end with.
    pub exit: i32,
    /// Commands it needs on the PATH besides `geoedge`, `sqlite3` and bash.
    pub needs: Vec<String>,
    /// What it must print (stdout and stderr together), when checked.
    pub output: Option<String>,
}

/// A block marked `doctest-skip`, with the reason given after the word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// 1-based line of its opening fence.
    pub line: usize,
    /// Why it is not run.
    pub reason: String,
}

/// The runnable examples and the skipped blocks of a Markdown text. An
/// example is a block whose info string has the word `doctest`; the block
/// right after it is its expected output when that one's info string has
/// the word `output`.
pub fn examples(text: &str) -> Result<(Vec<Example>, Vec<Skipped>), String> {
    let fences = fences(text);
    let mut examples = Vec::new();
    let mut skipped = Vec::new();
    for (i, f) in fences.iter().enumerate() {
        if f.has("doctest-skip") {
            let at = f.info.iter().position(|w| w == "doctest-skip").unwrap();
            let reason = f.info[at + 1..].join(" ");
            if reason.is_empty() {
                return Err(format!("line {}: doctest-skip without a reason", f.line));
            }
            skipped.push(Skipped {
                line: f.line,
                reason,
            });
            continue;
        }
        if f.has("output") && !fences[..i].last().is_some_and(|p| p.has("doctest")) {
            return Err(format!(
                "line {}: an output block that follows no doctest block",
                f.line
            ));
        }
        if !f.has("doctest") {
            continue;
        }
        let exit = match f.value("exit") {
            None => 0,
            Some(v) => v
                .parse()
                .map_err(|_| format!("line {}: exit={v} is not a number", f.line))?,
        };
        let needs = f
            .value("needs")
            .map(|v| v.split(',').map(String::from).collect())
            .unwrap_or_default();
        let output = fences
            .get(i + 1)
            .filter(|n| n.has("output"))
            .map(|n| n.body.clone());
        examples.push(Example {
            script: f.body.clone(),
            line: f.line,
            exit,
            needs,
            output,
        });
    }
    Ok((examples, skipped))
}

/// Whether `actual` matches `expected`, line by line, after trailing
/// whitespace and trailing blank lines are dropped from both. In
/// `expected`, a line that is `...` alone (indentation aside) stands for
/// any number of lines, none included, and `...` inside a line for any
/// text within that line.
pub fn matches(expected: &str, actual: &str) -> bool {
    let lines = |t: &str| -> Vec<String> {
        let mut v: Vec<String> = t.lines().map(|l| l.trim_end().to_owned()).collect();
        while v.last().is_some_and(|l| l.is_empty()) {
            v.pop();
        }
        v
    };
    let (e, a) = (lines(expected), lines(actual));
    match_lines(&e, &a)
}

fn match_lines(e: &[String], a: &[String]) -> bool {
    // Dynamic programming over (expected, actual) positions: small inputs.
    let (n, m) = (e.len(), a.len());
    let mut ok = vec![vec![false; m + 1]; n + 1];
    ok[n][m] = true;
    for i in (0..n).rev() {
        let any = e[i].trim() == "...";
        for j in (0..=m).rev() {
            ok[i][j] = if any {
                ok[i + 1][j] || (j < m && ok[i][j + 1])
            } else {
                j < m && match_line(&e[i], &a[j]) && ok[i + 1][j + 1]
            };
        }
    }
    ok[0][0]
}

/// One line, with `...` matching any text.
pub fn match_line(expected: &str, actual: &str) -> bool {
    let parts: Vec<&str> = expected.split("...").collect();
    if parts.len() == 1 {
        return expected == actual;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !actual.starts_with(first) || actual.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &actual[first.len()..];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fences_with_indentation_and_info() {
        let md = "text\n\n   ```sh doctest exit=2 needs=jq,curl\n   echo hi\n     nested\n   ```\n\n```text output\nhi\n```\n";
        let f = fences(md);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].info, ["sh", "doctest", "exit=2", "needs=jq,curl"]);
        assert_eq!(f[0].body, "echo hi\n  nested\n");
        assert_eq!(f[0].line, 3);
        let (ex, _) = examples(md).unwrap();
        assert_eq!(ex[0].exit, 2);
        assert_eq!(ex[0].needs, ["jq", "curl"]);
        assert_eq!(ex[0].output.as_deref(), Some("hi\n"));
    }

    #[test]
    fn a_longer_fence_holds_a_shorter_one() {
        let f = fences("````md\n```sh doctest\nx\n```\n````\n");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].body, "```sh doctest\nx\n```\n");
    }

    #[test]
    fn stray_output_and_reasonless_skip_are_errors() {
        assert!(examples("```sh\nx\n```\n```text output\nx\n```\n").is_err());
        assert!(examples("```sh doctest-skip\nx\n```\n").is_err());
        let (_, s) = examples("```sh doctest-skip needs two hosts\nx\n```\n").unwrap();
        assert_eq!(s[0].reason, "needs two hosts");
    }

    #[test]
    fn ellipses() {
        assert!(matches("a\nb\n", "a\nb  \n\n"));
        assert!(!matches("a\nb\n", "a\nb\nc\n"));
        assert!(matches("a\n...\nc\n", "a\nc\n"));
        assert!(matches("a\n  ...\nc\n", "a\nx\ny\nc\n"));
        assert!(matches("...\nc\n...\n", "x\nc\ny\n"));
        assert!(!matches("a\n...\nc\n", "a\nx\n"));
        assert!(matches("x=... y=...\n", "x=1 y=2\n"));
        assert!(match_line("...ab...ab", "abab"));
        assert!(!match_line("ab...ab", "aba"));
        assert!(match_line(
            "2026-...Z WARN ... rejected",
            "2026-01-01Z WARN x: rejected"
        ));
    }
}
