-- Argo CD resource actions for taskmaster.dev/ScheduledTask: run-now always
-- (disabled while the spec is Invalid or the task is being deleted), and
-- suspend or resume, whichever applies.
local actions = {}

local invalid = obj.status ~= nil and obj.status.phase == "Invalid"
local deleting = obj.metadata.deletionTimestamp ~= nil
actions["run-now"] = {
  ["displayName"] = "Run now",
  ["iconClass"] = "fa fa-fw fa-play-circle",
  ["disabled"] = invalid or deleting,
}

if obj.spec.suspend == true then
  actions["resume"] = {["iconClass"] = "fa fa-fw fa-play"}
else
  actions["suspend"] = {["iconClass"] = "fa fa-fw fa-pause"}
end

return actions
