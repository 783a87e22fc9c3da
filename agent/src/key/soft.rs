//! Software CTAP2 authenticator (being written).
