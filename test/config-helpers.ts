// What the config loader refuses, read the way the config tests read it.
import { ConfigError, parseConfig } from '../src/config/load.js'

/** The ConfigError parsing `yaml` raises (as file gw.yaml); throws when it parses. */
export function configError (yaml: string, env: NodeJS.ProcessEnv = {}): ConfigError {
  try {
    parseConfig(yaml, 'gw.yaml', env)
  } catch (err) {
    if (err instanceof ConfigError) return err
    throw err
  }
  throw new Error('expected a ConfigError')
}

/** The loader's message for `yaml`, or 'no error' when it parses. */
export function configErrorMessage (yaml: string, env: NodeJS.ProcessEnv = {}): string {
  try {
    parseConfig(yaml, 'gw.yaml', env)
  } catch (err) {
    if (err instanceof ConfigError) return err.message
    throw err
  }
  return 'no error'
}
