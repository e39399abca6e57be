//! The node daemon's identity: 128 random bits made the first time it starts with a data dir
//! and kept there (`DATA_DIR/identity`). A node name belongs to the daemon that registered it
//! first; the same daemon coming back (the same data dir) is itself, another machine under the
//! same name is refused until an admin replaces the node. Not a secret: it tells daemons apart,
//! it does not prove who one is.

use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;

pub const FILE: &str = "identity";

/// The identity kept in `data_dir`, made (durably) if there is none yet.
pub fn load_or_create(data_dir: &Path) -> io::Result<String> {
    let path = data_dir.join(FILE);
    match fs::read_to_string(&path) {
        Ok(text) if is_identity(text.trim()) => return Ok(text.trim().to_string()),
        Ok(text) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} holds {:?}, not a node identity (32 hex digits); remove it to make a new \
                     one, and then replace the node (gantry nodes replace)",
                    path.display(),
                    text.trim()
                ),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut bytes = [0u8; 16];
    fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let identity: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let temporary = path.with_extension("tmp");
    let mut file = fs::File::create(&temporary)?;
    file.write_all(format!("{identity}\n").as_bytes())?;
    file.sync_all()?;
    fs::rename(&temporary, &path)?;
    fs::File::open(data_dir)?.sync_all()?;
    Ok(identity)
}

fn is_identity(text: &str) -> bool {
    text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path()).unwrap();
        assert!(is_identity(&first), "{first}");
        assert_eq!(load_or_create(dir.path()).unwrap(), first);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(load_or_create(other.path()).unwrap(), first);
        fs::write(dir.path().join(FILE), "garbage\n").unwrap();
        let err = load_or_create(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not a node identity"), "{err}");
    }
}
