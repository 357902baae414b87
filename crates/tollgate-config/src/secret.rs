//! Secret references: `env:NAME`, `file:PATH`, or (only with `allow_inline_secrets = true`) the
//! literal. Error messages name the variable or file, never the material.

use std::path::Path;

use tollgate_verify::Secret;

use crate::Env;

/// Where a secret came from (for lints; the material is in the [`Secret`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable.
    Env(String),
    /// A file.
    File(String),
    /// Written in the config file.
    Inline,
}

/// Resolves a reference.
pub fn resolve(
    text: &str,
    allow_inline: bool,
    env: &dyn Env,
) -> Result<(Secret, SecretSource), String> {
    if let Some(name) = text.strip_prefix("env:") {
        return match env.var(name) {
            Some(v) if !v.is_empty() => Ok((Secret::new(v), SecretSource::Env(name.to_owned()))),
            Some(_) => Err(format!("env var {name} is empty")),
            None => Err(format!("env var {name} is not set")),
        };
    }
    if let Some(path) = text.strip_prefix("file:") {
        return read_file(Path::new(path)).map(|s| (s, SecretSource::File(path.to_owned())));
    }
    if allow_inline {
        if text.is_empty() {
            return Err("secret is empty".into());
        }
        return Ok((Secret::new(text), SecretSource::Inline));
    }
    Err("literal secrets are refused; use env:NAME or file:PATH (or set allow_inline_secrets = true)".into())
}

/// The permission bits of a file that its group or others may read or write (`None` if only its
/// owner may, and always on systems without Unix modes): secret files, TLS private keys.
pub fn readable_by_others(meta: &std::fs::Metadata) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        None
    }
}

fn read_file(path: &Path) -> Result<Secret, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("secret file {shown}: {e}"))?;
    if let Some(mode) = readable_by_others(&meta) {
        return Err(format!(
            "secret file {shown} is readable by group or others (mode {mode:o}); chmod 600 it"
        ));
    }
    let mut bytes = std::fs::read(path).map_err(|e| format!("secret file {shown}: {e}"))?;
    // Editors and `echo` add a final newline that is not part of the key.
    while matches!(bytes.last(), Some(b'\n' | b'\r')) {
        bytes.pop();
    }
    if bytes.is_empty() {
        return Err(format!("secret file {shown} is empty"));
    }
    Ok(Secret::new(bytes))
}
