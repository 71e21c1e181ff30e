//! Registration tokens (`m.login.registration_token`).
