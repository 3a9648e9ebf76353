//! Key files: one private COSE_Key in CBOR, mode 0600.

use std::io::Write;
use std::path::Path;

use super::SigningKey;
use crate::error::{Code, Error, Result, err};

fn io_error(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::new(Code::KeyIo, format!("cannot {what} {}: {e}", path.display())).with_source(e)
}

/// Writes `key` as a private COSE_Key to a new file with mode 0600. An
/// existing file is never overwritten.
pub fn write_signing_key_file(path: &Path, key: &SigningKey, kid: Option<&[u8]>) -> Result<()> {
    let encoded = key.to_cose_key(kid);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| io_error(path, "create", e))?;
    file.write_all(&encoded).map_err(|e| io_error(path, "write", e))?;
    file.sync_all().map_err(|e| io_error(path, "sync", e))?;
    Ok(())
}

/// Reads a private COSE_Key file. Files readable by group or others are
/// refused, as ssh refuses them: the key may already be compromised.
pub fn read_signing_key_file(path: &Path) -> Result<SigningKey> {
    let metadata = std::fs::metadata(path).map_err(|e| io_error(path, "read", e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return err(
                Code::KeyIo,
                format!(
                    "{} has mode {mode:o}; a private key file must not be accessible by group or others (chmod 600)",
                    path.display()
                ),
            );
        }
    }
    if metadata.len() > 4096 {
        return err(
            Code::KeyIo,
            format!(
                "{} is {} bytes; a key file is under 200",
                path.display(),
                metadata.len()
            ),
        );
    }
    let bytes = zeroize::Zeroizing::new(std::fs::read(path).map_err(|e| io_error(path, "read", e))?);
    SigningKey::from_cose_key(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Algorithm;

    #[test]
    fn key_file_is_0600_and_round_trips() {
        let dir = std::env::temp_dir().join(format!("keybound-keyfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("client.key");
        let _ = std::fs::remove_file(&path);
        let key = SigningKey::generate(Algorithm::EdDSA).unwrap();
        write_signing_key_file(&path, &key, None).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert_eq!(read_signing_key_file(&path).unwrap().public_key(), key.public_key());
        // Never overwritten.
        assert_eq!(
            write_signing_key_file(&path, &key, None).unwrap_err().code(),
            Code::KeyIo
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert_eq!(read_signing_key_file(&path).unwrap_err().code(), Code::KeyIo);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
