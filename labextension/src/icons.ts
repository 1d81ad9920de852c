/** The extension's own icons. */

import { LabIcon } from '@jupyterlab/ui-components';

// Two terminals stacked: several agents at work.
const MAS_PATHS = `<g class="jp-icon3" fill="#616161">
    <path d="M3 3h13a1 1 0 0 1 1 1v2h-2V5H4v8h2v2H3a1 1 0 0 1-1-1V4a1 1 0 0 1 1-1z"/>
    <path d="M8 8h13a1 1 0 0 1 1 1v10a1 1 0 0 1-1 1H8a1 1 0 0 1-1-1V9a1 1 0 0 1 1-1zm1 2v8h11v-8H9z"/>
    <path d="M10.5 11.2l2.8 2.3-2.8 2.3-.9-1.1 1.5-1.2-1.5-1.2zM14 15h4v1.4h-4z"/>
  </g>`;

function svg(body: string): string {
  return `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">${body}</svg>`;
}

export const masIcon = new LabIcon({ name: 'mas-jupyter:sessions', svgstr: svg(MAS_PATHS) });

// A small robot head: the default icon of an agent without a persona icon.
export const agentIcon = new LabIcon({
  name: 'mas-jupyter:agent',
  svgstr: svg(`<g class="jp-icon3" fill="#616161">
    <path d="M11 2h2v3h-2z"/>
    <path d="M6 6h12a2 2 0 0 1 2 2v9a2 2 0 0 1-2 2H6a2 2 0 0 1-2-2V8a2 2 0 0 1 2-2zm0 2v9h12V8H6z"/>
    <circle cx="9" cy="12" r="1.6"/><circle cx="15" cy="12" r="1.6"/>
    <path d="M9 15h6v1.2H9zM1.5 10h1.5v5H1.5zM21 10h1.5v5H21z"/>
  </g>`)
});

const counted = new Map<string, LabIcon>();

/** The panel's icon with the number of waiting workers drawn on it (the side bar shows icons only). */
export function masIconWithCount(n: number): LabIcon {
  if (n <= 0) {
    return masIcon;
  }
  const label = n > 9 ? '9+' : String(n);
  let icon = counted.get(label);
  if (!icon) {
    icon = new LabIcon({
      name: `mas-jupyter:sessions-waiting-${label}`,
      svgstr: svg(`${MAS_PATHS}
  <g class="mas-WaitingBadge">
    <circle cx="17" cy="7" r="7" style="fill: var(--jp-warn-color1, #f57c00)"/>
    <text x="17" y="10.5" text-anchor="middle" font-size="${label.length > 1 ? 8 : 10}" font-weight="bold"
      font-family="sans-serif" style="fill: var(--jp-ui-inverse-font-color1, #fff)">${label}</text>
  </g>`)
    });
    counted.set(label, icon);
  }
  return icon;
}
