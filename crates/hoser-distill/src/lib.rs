//! `hoser-distill`: HOSER distilled from an LM-TAD teacher. This crate holds the teacher side:
//! training LM-TAD on a LibCity dataset ([`teacher`], `hoser-distill teacher`) and its perplexity
//! scores ([`score`], `hoser-distill teacher-score`). The model lives in [`hoser::lmtad`].

pub mod score;
pub mod teacher;
