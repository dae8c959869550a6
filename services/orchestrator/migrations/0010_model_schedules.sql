-- Model schedules. A scheduled model's syncs fall at the moment its schedule was set plus
-- whole intervals (schedule_set_at; null without a schedule). Each time slot is claimed once,
-- by whichever orchestrator replica gets there first, in model_schedule_slots; deleting a model
-- deletes its slot, and with the model its schedule is gone.
alter table models add column schedule_set_at timestamptz;
update models set schedule_set_at = updated_at where schedule_interval_seconds is not null;
create table model_schedule_slots (
    model_id uuid primary key references models (id) on delete cascade,
    -- The latest slot a sync was started for.
    slot timestamptz not null
);
