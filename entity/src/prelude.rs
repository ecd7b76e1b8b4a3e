//! The entities under their usual names: `use entity::prelude::*;`.

pub use crate::idempotency_key::{
    ActiveModel as IdempotencyKeyActiveModel, Column as IdempotencyKeyColumn,
    Entity as IdempotencyKey, Model as IdempotencyKeyModel,
};
pub use crate::note::{
    ActiveModel as NoteActiveModel, Column as NoteColumn, Entity as Note, Model as NoteModel,
};
pub use crate::session::{
    ActiveModel as SessionActiveModel, Column as SessionColumn, Entity as Session,
    Model as SessionModel,
};
pub use crate::user::{
    ActiveModel as UserActiveModel, Column as UserColumn, Entity as User, Model as UserModel,
};
