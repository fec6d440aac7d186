"""Alert ingestion moved out of the observability app into its own: the models are taken over in Django's
state only. Their tables keep their names (``observability_alertdelivery``, ``observability_alertevent`` and
their many-to-many tables), so nothing is copied or renamed in the database; the content types move to the new
app label, so permissions and admin history stay attached to them.
"""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


def move_content_types(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    db = schema_editor.connection.alias
    ContentType.objects.using(db).filter(app_label="observability", model__in=["alertdelivery", "alertevent"]).update(
        app_label="alerts"
    )


def restore_content_types(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    db = schema_editor.connection.alias
    ContentType.objects.using(db).filter(app_label="alerts", model__in=["alertdelivery", "alertevent"]).update(
        app_label="observability"
    )


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('contenttypes', '0002_remove_content_type_name'),
        ('observability', '0001_initial'),
        ('workflows', '0001_initial'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='AlertDelivery',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('received_at', models.DateTimeField(db_index=True, default=django.utils.timezone.now)),
                        ('source', models.CharField(choices=[('grafana', 'Grafana'), ('alertmanager', 'Alertmanager'), ('unknown', 'Unknown')], default='unknown', max_length=20)),
                        ('status', models.CharField(blank=True, help_text="The notification's firing/resolved.", max_length=10)),
                        ('group_key', models.CharField(blank=True, max_length=1000)),
                        ('alert_count', models.PositiveIntegerField(default=0)),
                        ('headers', models.JSONField(blank=True, default=dict, help_text='Relevant request headers; never Authorization.')),
                        ('content_type', models.CharField(blank=True, max_length=200)),
                        ('body', models.TextField(blank=True, help_text='The request body as received (decoded as UTF-8).')),
                        ('outcome', models.CharField(choices=[('received', 'received (not processed yet)'), ('processed', 'processed (runs started)'), ('deduplicated', 'deduplicated (no new alert)'), ('rejected', 'rejected (bad request)'), ('error', 'error (processing failed)')], db_index=True, default='received', max_length=20)),
                        ('http_status', models.PositiveSmallIntegerField(blank=True, null=True)),
                        ('error', models.TextField(blank=True)),
                        ('attempts', models.PositiveIntegerField(default=0, help_text='Times it was processed (1 + replays).')),
                        ('processed_at', models.DateTimeField(blank=True, null=True)),
                        ('runs', models.ManyToManyField(blank=True, related_name='alert_deliveries', to='workflows.workflowrun')),
                    ],
                    options={
                        'db_table': 'observability_alertdelivery',
                        'verbose_name_plural': 'alert deliveries',
                        'ordering': ['-received_at', '-id'],
                    },
                ),
                migrations.CreateModel(
                    name='AlertEvent',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('fingerprint', models.CharField(max_length=200)),
                        ('status', models.CharField(max_length=10)),
                        ('starts_at', models.DateTimeField()),
                        ('alertname', models.CharField(blank=True, max_length=300)),
                        ('first_seen_at', models.DateTimeField(default=django.utils.timezone.now)),
                        ('last_seen_at', models.DateTimeField(default=django.utils.timezone.now)),
                        ('notified_at', models.DateTimeField(help_text='When it last started a run; repeats within the window do not.')),
                        ('duplicates', models.PositiveIntegerField(default=0)),
                        ('delivery', models.ForeignKey(null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='events', to='alerts.alertdelivery')),
                        ('firing_event', models.ForeignKey(blank=True, help_text='For a resolved alert: the firing alert it resolves.', null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='resolutions', to='alerts.alertevent')),
                        ('runs', models.ManyToManyField(blank=True, related_name='alert_events', to='workflows.workflowrun')),
                    ],
                    options={
                        'db_table': 'observability_alertevent',
                        'ordering': ['-last_seen_at'],
                        'constraints': [models.UniqueConstraint(fields=('fingerprint', 'status', 'starts_at'), name='alertevent_unique_alert')],
                    },
                ),
            ],
        ),
        migrations.RunPython(move_content_types, restore_content_types),
    ]
