"""The alert models now belong to the alerts app (alerts/migrations/0001_initial.py); in the database nothing
changes, the tables stay where they are."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('observability', '0001_initial'),
        ('alerts', '0001_initial'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(name='AlertEvent'),
                migrations.DeleteModel(name='AlertDelivery'),
            ],
        ),
    ]
