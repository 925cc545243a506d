// Asset imports in the plugins (after @grafana/create-plugin's .config/types/custom.d.ts).
declare module '*.svg' {
  const src: string;
  export default src;
}
declare module '*.png' {
  const src: string;
  export default src;
}
