//! `hoser-distill`: HOSER distilled from an LM-TAD teacher. [`distill`] is the distilled HOSER
//! run (`hoser-distill --dataset NAME --seed S`); the teacher side is training LM-TAD on a LibCity
//! dataset ([`teacher`], `hoser-distill teacher`) and its perplexity scores ([`score`],
//! `hoser-distill teacher-score`). The model lives in [`hoser::lmtad`].

pub mod distill;
pub mod score;
pub mod teacher;
