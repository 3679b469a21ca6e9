//! Test ESI/Echo servers and clients (tonic).
