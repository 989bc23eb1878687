//! Where a task's images come from: the host's image store (pulled from a registry, or the
//! copy already on the host when the registry cannot be reached), or nothing at all for the
//! simulated agent.

use std::sync::Arc;

use flotilla_host::{BoxFuture, RegistryLogin};
use flotilla_image::{Credentials, Image, ImageStore};

pub trait ImageSource: Send + Sync {
    /// The image for `reference`; `Err` is the task's stopped reason in AWS's words.
    fn pull<'a>(&'a self, reference: &'a str, login: Option<&'a RegistryLogin>)
    -> BoxFuture<'a, Result<Image, String>>;
}

impl ImageSource for ImageStore {
    fn pull<'a>(
        &'a self,
        reference: &'a str,
        login: Option<&'a RegistryLogin>,
    ) -> BoxFuture<'a, Result<Image, String>> {
        Box::pin(async move {
            let login = login.map(|l| Credentials::new(l.username.clone(), l.password.clone()));
            match ImageStore::pull(self, reference, login, flotilla_image::Progress::none()).await {
                Ok(image) => Ok(image),
                // As the ECS agent's default pull behaviour: when the registry cannot be
                // reached, a copy already on the host (pulled before, or imported on an
                // offline host with `flotilla image import`) is used instead.
                Err(e) if let Ok(Some(cached)) = self.get(reference).await => {
                    tracing::warn!(image = %reference, error = %e, "pull failed; using the image already on this host");
                    Ok(cached)
                }
                Err(e) => Err(format!("CannotPullContainerError: {}", e.aws_reason())),
            }
        })
    }
}

impl<T: ImageSource + ?Sized> ImageSource for Arc<T> {
    fn pull<'a>(
        &'a self,
        reference: &'a str,
        login: Option<&'a RegistryLogin>,
    ) -> BoxFuture<'a, Result<Image, String>> {
        (**self).pull(reference, login)
    }
}
