/** The extension's own icons. */

import { LabIcon } from '@jupyterlab/ui-components';

// Three terminals stacked: several agents at work.
const MAS_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <path d="M3 3h13a1 1 0 0 1 1 1v2h-2V5H4v8h2v2H3a1 1 0 0 1-1-1V4a1 1 0 0 1 1-1z"/>
    <path d="M8 8h13a1 1 0 0 1 1 1v10a1 1 0 0 1-1 1H8a1 1 0 0 1-1-1V9a1 1 0 0 1 1-1zm1 2v8h11v-8H9z"/>
    <path d="M10.5 11.2l2.8 2.3-2.8 2.3-.9-1.1 1.5-1.2-1.5-1.2zM14 15h4v1.4h-4z"/>
  </g>
</svg>`;

export const masIcon = new LabIcon({ name: 'mas-jupyter:sessions', svgstr: MAS_SVG });
