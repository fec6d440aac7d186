import pytest
from django.contrib.auth.models import Group

from accounts.roles import ROLES, ensure_roles

pytestmark = pytest.mark.django_db


def test_migrate_leaves_an_operators_and_a_viewers_group_with_their_permissions() -> None:
    ensure_roles()
    for name, perms in ROLES.items():
        group = Group.objects.get(name=name)
        granted = {f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.all()}
        assert granted == set(perms)
    viewers = {p.codename for p in Group.objects.get(name="viewers").permissions.all()}
    assert "decide_approval" not in viewers and "change_workflowrun" not in viewers
