//! The SuperLink's accounts file (`--user-auth-config FILE`):
//!
//! ```toml
//! [[users]]
//! name = "alice"
//! password-hash = "$argon2id$v=19$m=19456,t=2,p=1$..."   # `flwr hash-password`
//! role = "admin"                                          # or "user" (the default)
//!
//! [[users]]
//! name = "ci-bot"
//! api-token-hash = "$argon2id$..."                        # for `flwr login --api-token-stdin`
//! ```
//!
//! Every problem is refused when the file is loaded, with the user's name, the line and the
//! fix, so a typo never surfaces later as "wrong password".

use super::secrets::{check_phc, hash_secret, verify_secret};
use serde::Deserialize;
use thiserror::Error;
use toml::Spanned;

/// What a user may do beyond their own runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sees and stops their own runs.
    User,
    /// Sees and stops every run.
    Admin,
}

/// One user of the accounts file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The name the user logs in with; unique within the file.
    pub name: String,
    /// Which runs the user may see and stop.
    pub role: Role,
    /// Argon2 PHC string of the password; `None`: no password login.
    pub password_hash: Option<String>,
    /// Argon2 PHC string of an API token; `None`: no token login.
    pub api_token_hash: Option<String>,
}

/// The users a SuperLink knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accounts {
    users: Vec<Account>,
}

/// Why an accounts file was refused: one line naming the place and the fix.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AccountsError {
    /// Not valid TOML, or keys the file format does not have.
    #[error("line {line}: {message}")]
    Syntax {
        /// 1-based line of the error.
        line: usize,
        /// The TOML parser's message, on one line.
        message: String,
    },
    /// The file defines no users, so nobody could log in.
    #[error("no users: add at least one [[users]] table with name and password-hash")]
    Empty,
    /// One user's entry is unusable (empty or duplicate name, unknown role, no usable hash).
    #[error("user {user:?} (line {line}): {problem}: {fix}")]
    User {
        /// The user's name as written.
        user: String,
        /// 1-based line of the user's name.
        line: usize,
        /// What is wrong.
        problem: String,
        /// What to change in the file.
        fix: &'static str,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    users: Vec<UserEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct UserEntry {
    name: Spanned<String>,
    #[serde(default)]
    password_hash: Option<String>,
    #[serde(default)]
    api_token_hash: Option<String>,
    #[serde(default)]
    role: Option<String>,
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).map_or(1, |before| {
        before.bytes().filter(|b| *b == b'\n').count() + 1
    })
}

/// A hash no password is checked against for real: the work done for unknown users.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_secret("floret decoy password", &mut rand::rng()).unwrap_or_default())
}

const HASH_FIX: &str = "make one with `flwr hash-password` (it reads the secret from stdin)";

impl Accounts {
    /// Parses and checks an accounts file's text.
    ///
    /// # Errors
    /// See [`AccountsError`]: syntax, unknown keys, duplicate names, unknown roles, users
    /// without a password or token hash, hashes that are not argon2.
    pub fn parse(text: &str) -> Result<Accounts, AccountsError> {
        let file: File = toml::from_str(text).map_err(|e| AccountsError::Syntax {
            line: e.span().map_or(1, |s| line_of(text, s.start)),
            message: e.message().trim_end().replace('\n', " "),
        })?;
        if file.users.is_empty() {
            return Err(AccountsError::Empty);
        }
        let mut users: Vec<Account> = Vec::with_capacity(file.users.len());
        for entry in file.users {
            let line = line_of(text, entry.name.span().start);
            let name = entry.name.into_inner();
            let problem = |problem: String, fix: &'static str| AccountsError::User {
                user: name.clone(),
                line,
                problem,
                fix,
            };
            if name.trim().is_empty() {
                return Err(problem("empty name".into(), "give every user a name"));
            }
            if users.iter().any(|u| u.name == name) {
                return Err(problem(
                    "listed twice".into(),
                    "keep one [[users]] table per name",
                ));
            }
            let role = match entry.role.as_deref() {
                None | Some("user") => Role::User,
                Some("admin") => Role::Admin,
                Some(other) => {
                    return Err(problem(
                        format!("unknown role {other:?}"),
                        "write role = \"user\" or role = \"admin\"",
                    ));
                }
            };
            if entry.password_hash.is_none() && entry.api_token_hash.is_none() {
                return Err(problem(
                    "neither password-hash nor api-token-hash".into(),
                    HASH_FIX,
                ));
            }
            for (key, hash) in [
                ("password-hash", &entry.password_hash),
                ("api-token-hash", &entry.api_token_hash),
            ] {
                if let Some(hash) = hash {
                    check_phc(hash).map_err(|e| {
                        problem(format!("{key} is not an argon2 hash ({e})"), HASH_FIX)
                    })?;
                }
            }
            users.push(Account {
                name,
                role,
                password_hash: entry.password_hash,
                api_token_hash: entry.api_token_hash,
            });
        }
        Ok(Accounts { users })
    }

    /// Every account, in the order of the file.
    pub fn users(&self) -> &[Account] {
        &self.users
    }

    /// The account whose password this is. Slow on purpose (argon2), and as slow for a
    /// name that does not exist, so response times do not reveal which users exist.
    pub fn check_password(&self, username: &str, password: &str) -> Option<&Account> {
        let account = self.users.iter().find(|u| u.name == username);
        let hash = account
            .and_then(|u| u.password_hash.as_deref())
            .unwrap_or_else(|| decoy_hash());
        let matches = verify_secret(password, hash);
        account.filter(|u| matches && u.password_hash.is_some())
    }

    /// The account an API token belongs to. Tries each account that has a token hash:
    /// argon2 hashes are salted, so there is no index to look the token up in; accounts
    /// files are small.
    pub fn check_api_token(&self, token: &str) -> Option<&Account> {
        self.users.iter().find(|u| {
            u.api_token_hash
                .as_deref()
                .is_some_and(|h| verify_secret(token, h))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::secrets::hash_secret;
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn hash(secret: &str) -> String {
        hash_secret(secret, &mut StdRng::seed_from_u64(7)).unwrap()
    }

    fn user_error(text: &str) -> (String, usize, String) {
        match Accounts::parse(text).unwrap_err() {
            AccountsError::User {
                user,
                line,
                problem,
                ..
            } => (user, line, problem),
            e => panic!("expected a user error, got {e}"),
        }
    }

    #[test]
    fn parses_users_roles_and_checks_secrets() {
        let text = format!(
            "[[users]]\nname = \"alice\"\npassword-hash = \"{}\"\nrole = \"admin\"\n\n\
             [[users]]\nname = \"bot\"\napi-token-hash = \"{}\"\n",
            hash("pw-a"),
            hash("tok-b")
        );
        let accounts = Accounts::parse(&text).unwrap();
        assert_eq!(accounts.users().len(), 2);
        assert_eq!(accounts.users()[0].role, Role::Admin);
        assert_eq!(accounts.users()[1].role, Role::User);
        assert_eq!(
            accounts.check_password("alice", "pw-a").unwrap().name,
            "alice"
        );
        assert!(accounts.check_password("alice", "pw-b").is_none());
        assert!(accounts.check_password("nobody", "pw-a").is_none());
        assert!(accounts.check_password("bot", "tok-b").is_none());
        assert_eq!(accounts.check_api_token("tok-b").unwrap().name, "bot");
        assert!(accounts.check_api_token("pw-a").is_none());
    }

    #[test]
    fn problems_name_the_user_and_line() {
        let h = hash("x");
        let (user, line, problem) = user_error(&format!(
            "[[users]]\nname = \"a\"\npassword-hash = \"{h}\"\n[[users]]\nname = \"b\"\nrole = \"root\"\npassword-hash = \"{h}\"\n"
        ));
        assert_eq!((user.as_str(), line), ("b", 5));
        assert!(problem.contains("unknown role \"root\""), "{problem}");

        let (user, _, problem) = user_error("[[users]]\nname = \"c\"\n");
        assert_eq!(user, "c");
        assert!(problem.contains("neither password-hash"), "{problem}");

        let (_, _, problem) = user_error("[[users]]\nname = \"d\"\npassword-hash = \"hunter2\"\n");
        assert!(problem.contains("not an argon2 hash"), "{problem}");

        let (_, line, problem) = user_error(&format!(
            "[[users]]\nname = \"e\"\npassword-hash = \"{h}\"\n[[users]]\nname = \"e\"\npassword-hash = \"{h}\"\n"
        ));
        assert_eq!(line, 5);
        assert!(problem.contains("twice"), "{problem}");
    }

    #[test]
    fn syntax_errors_and_empty_files_are_refused() {
        let e = Accounts::parse("[[users]]\nname = \"a\"\npasword-hash = \"x\"\n").unwrap_err();
        assert!(matches!(e, AccountsError::Syntax { line: 3, .. }), "{e}");
        assert!(e.to_string().contains("pasword-hash"), "{e}");
        assert_eq!(Accounts::parse("").unwrap_err(), AccountsError::Empty);
        assert!(!e.to_string().contains('\n'));
    }
}
