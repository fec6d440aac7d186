from django.contrib import admin

from approvals.models import ApprovalRequest


@admin.register(ApprovalRequest)
class ApprovalRequestAdmin(admin.ModelAdmin):
    list_display = ["node_key", "run", "status", "requested_at", "decided_by", "decided_at"]
    list_filter = ["status"]
