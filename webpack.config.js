/**
 * The Grafana plugins' build (npm run build:plugins). Extends the create-plugin style base in
 * .config/webpack/; add project-specific changes here, not there.
 */
const grafanaConfig = require('./.config/webpack/webpack.config');

module.exports = async (env) => {
  const configs = await grafanaConfig(env);
  return configs.map((c) => ({ ...c }));
};
