//! [`CallerView`]: the service's methods on behalf of one [`Caller`], with
//! its permissions checked when IAM is enforced.

use crate::error::Error;
use crate::model::Job;
use crate::name::{JobName, ProjectName};

use super::{Caller, JobService, ListJobsRequest, ListJobsResponse, Policy};

/// A [`JobService`] acting for one [`Caller`]; see [`JobService::caller`].
#[derive(Debug, Clone, Copy)]
pub struct CallerView<'a> {
    pub(super) service: &'a JobService,
    pub(super) caller: &'a Caller,
}

impl CallerView<'_> {
    /// The caller.
    pub fn caller(&self) -> &Caller {
        self.caller
    }

    /// [`JobService::create`] for the caller (`ml.jobs.create` on the project).
    ///
    /// # Errors
    /// `PERMISSION_DENIED`, and those of [`JobService::create`].
    pub fn create(&self, parent: &ProjectName, job: Job) -> Result<Job, Error> {
        self.service.create_as(Some(self.caller), parent, job)
    }

    /// [`JobService::get`] for the caller (`ml.jobs.get`).
    ///
    /// # Errors
    /// `PERMISSION_DENIED`, and those of [`JobService::get`].
    pub fn get(&self, name: &JobName) -> Result<Job, Error> {
        self.service.get_as(Some(self.caller), name)
    }

    /// [`JobService::list`] for the caller (`ml.jobs.list` on the project).
    ///
    /// # Errors
    /// `PERMISSION_DENIED`, and those of [`JobService::list`].
    pub fn list(
        &self,
        parent: &ProjectName,
        request: &ListJobsRequest,
    ) -> Result<ListJobsResponse, Error> {
        self.service.list_as(Some(self.caller), parent, request)
    }

    /// [`JobService::patch`] for the caller (`ml.jobs.update`).
    ///
    /// # Errors
    /// `PERMISSION_DENIED`, and those of [`JobService::patch`].
    pub fn patch(&self, name: &JobName, job: Job, update_mask: &str) -> Result<Job, Error> {
        self.service
            .patch_as(Some(self.caller), name, job, update_mask)
    }

    /// [`JobService::cancel`] for the caller (`ml.jobs.cancel`).
    ///
    /// # Errors
    /// `PERMISSION_DENIED`, and those of [`JobService::cancel`].
    pub fn cancel(&self, name: &JobName) -> Result<(), Error> {
        self.service.cancel_as(Some(self.caller), name)
    }

    /// [`JobService::get_iam_policy`] for the caller (`ml.jobs.getIamPolicy`).
    ///
    /// # Errors
    /// `PERMISSION_DENIED`, and those of [`JobService::get_iam_policy`].
    pub fn get_iam_policy(
        &self,
        resource: &JobName,
        requested_version: Option<i32>,
    ) -> Result<Policy, Error> {
        self.service
            .get_iam_policy_as(Some(self.caller), resource, requested_version)
    }

    /// [`JobService::set_iam_policy`] for the caller (`ml.jobs.setIamPolicy`).
    ///
    /// # Errors
    /// `PERMISSION_DENIED`, and those of [`JobService::set_iam_policy`].
    pub fn set_iam_policy(
        &self,
        resource: &JobName,
        policy: Policy,
        update_mask: Option<&str>,
    ) -> Result<Policy, Error> {
        self.service
            .set_iam_policy_as(Some(self.caller), resource, policy, update_mask)
    }

    /// [`JobService::test_iam_permissions`] for the caller: the permissions
    /// asked for that the project's or the job's policy grants it (all
    /// asked-for `ml.jobs.*` ones when the service does not enforce IAM).
    ///
    /// # Errors
    /// As [`JobService::test_iam_permissions`].
    pub fn test_iam_permissions(
        &self,
        resource: &JobName,
        permissions: &[String],
    ) -> Result<Vec<String>, Error> {
        self.service
            .test_iam_permissions_as(Some(self.caller), resource, permissions)
    }
}
