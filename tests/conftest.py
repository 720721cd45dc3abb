"""Shared pytest fixtures: the fake GitLab, the reference receiver and PostgreSQL."""

from tests.fakes.fixtures import *  # noqa: F403
