/** Command ids and names shared by the panel, the consoles and the plugin. */

export namespace CommandIDs {
  export const showPanel = 'mas:show-panel';
  export const refresh = 'mas:refresh';
  export const newSession = 'mas:new-session';
  export const addWorker = 'mas:add-worker';
  export const pause = 'mas:pause-session';
  export const resume = 'mas:resume-session';
  export const stop = 'mas:stop-session';
  export const remove = 'mas:delete-session';
  export const rename = 'mas:rename-session';
  export const setTask = 'mas:set-task';
  export const openWorkspace = 'mas:open-workspace';
  export const openConsole = 'mas:open-console';
  export const restartWorker = 'mas:restart-worker';
  export const removeWorker = 'mas:remove-worker';
  export const enableNotifications = 'mas:enable-notifications';
}

/** The palette category of every command. */
export const CATEGORY = 'MAS';

/** The settings plugin id (matches schema/plugin.json). */
export const PLUGIN_ID = 'mas_jupyter:plugin';
